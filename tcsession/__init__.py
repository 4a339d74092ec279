"""tcsession: Tomcat session clustering, deployed over SSH."""
