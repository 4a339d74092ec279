/*
 * TEST STAND-IN, NOT memcached-session-manager. Built by tests/standin.py for the lab tests in
 * CI, which cannot download the real jars. It is a StandardManager: sessions stay in this JVM
 * and are NEVER backed up to memcached, so no test may claim session replication with it.
 *
 * What it does prove when Tomcat loads it from the jars tcsession placed in Tomcat's lib:
 * Tomcat found the class named in the <Manager> of the Context, set the attributes tcsession
 * wrote, and (on Tomcat 10+) the javax -> jakarta conversion worked: startInternal uses
 * javax.servlet.ServletContext, which only links on a jakarta Tomcat once converted. It also
 * opens a TCP connection to every node of memcachedNodes and logs memcached's "version" answer,
 * so the log shows whether this Tomcat reaches each memcached.
 */
package de.javakaffee.web.msm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

import org.apache.catalina.LifecycleException;
import org.apache.catalina.session.StandardManager;
import org.apache.juli.logging.Log;
import org.apache.juli.logging.LogFactory;

public class MemcachedBackupSessionManager extends StandardManager {
    private static final Log log = LogFactory.getLog(MemcachedBackupSessionManager.class);

    private String memcachedNodes = "";
    private String failoverNodes = "";
    private boolean sticky = true;
    private String lockingMode = "";
    private String requestUriIgnorePattern = "";
    private String transcoderFactoryClass = "";

    public void setMemcachedNodes(String v) { memcachedNodes = v; }
    public String getMemcachedNodes() { return memcachedNodes; }
    public void setFailoverNodes(String v) { failoverNodes = v; }
    public String getFailoverNodes() { return failoverNodes; }
    public void setSticky(boolean v) { sticky = v; }
    public boolean isSticky() { return sticky; }
    public void setLockingMode(String v) { lockingMode = v; }
    public String getLockingMode() { return lockingMode; }
    public void setRequestUriIgnorePattern(String v) { requestUriIgnorePattern = v; }
    public String getRequestUriIgnorePattern() { return requestUriIgnorePattern; }
    public void setTranscoderFactoryClass(String v) { transcoderFactoryClass = v; }
    public String getTranscoderFactoryClass() { return transcoderFactoryClass; }

    @Override
    protected synchronized void startInternal() throws LifecycleException {
        super.startInternal();
        javax.servlet.ServletContext sc = getContext().getServletContext();
        StringBuilder nodes = new StringBuilder();
        for (String node : memcachedNodes.trim().split("[ ,]+")) {
            String[] p = node.split(":");
            if (p.length == 3) {
                nodes.append(' ').append(p[0]).append('@').append(p[1]).append(':').append(p[2])
                     .append('=').append(probe(p[1], Integer.parseInt(p[2])));
            }
        }
        log.info("tcsession-standin: MemcachedBackupSessionManager STAND-IN (a test double, not "
                 + "memcached-session-manager; sessions are not backed up) started on "
                 + sc.getServerInfo() + " sticky=" + sticky + " failoverNodes=[" + failoverNodes
                 + "] lockingMode=[" + lockingMode + "] memcached:" + nodes);
    }

    private static String probe(String host, int port) {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(host, port), 2000);
            s.setSoTimeout(2000);
            OutputStream out = s.getOutputStream();
            out.write("version\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.US_ASCII));
            String line = in.readLine();
            return line == null ? "no-answer" : line.trim().replace(' ', '_');
        } catch (IOException e) {
            return "unreachable(" + e.getClass().getSimpleName() + ")";
        }
    }
}
