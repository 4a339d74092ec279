package PKG;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;

/** Class shapes whose serialVersionUID serialver computes (tests/test_serialcompat.py). */
public class Shapes implements Serializable {
    public int plain;
    private int hidden;
    private static int privateStatic;
    private transient int privateTransient;
    protected transient long kept;
    static final String CONSTANT = "x";
    volatile Object[] arr;
    public java.util.Map<String, List<Integer>> map = new HashMap<>();

    public Shapes() {}
    protected Shapes(int a, String... rest) {}
    private Shapes(long l) {}

    public synchronized void sync() {}
    public native void nat();
    private void priv() {}
    static void stat(int[][] a, Object o) {}
    public final <T extends Comparable<T>> T generic(T t) { return t; }

    public static class Nested implements Serializable { int a; }
    protected class Inner implements Serializable { int b; }
    private static final class PrivateNested extends ArrayList<String> { }
    static class NoClinit implements Serializable { public long v; public void m() {} }
    static class WithClinit implements Serializable { static int[] t = new int[3]; int q; }
    public static class Declared implements Serializable { private static final long serialVersionUID = 42L; int w; }
    public abstract static class Abstract implements Serializable { abstract void go(); }
    public interface Marked extends Serializable { void m(); }
    public interface Empty extends Serializable { }
    public static class ImplMarked implements Marked, Comparable<ImplMarked> {
        public void m() {}
        public int compareTo(ImplMarked o) { return 0; }  // a bridge method
    }
    public static class Failure extends Exception { public Failure(String s) { super(s); } }
    public static class Bag extends HashMap<String, String> { Runnable r = new Runnable() { public void run() {} }; }
    enum Color { RED, GREEN { @Override public String toString() { return "g"; } } }

    Serializable anonymous() {
        return new Serializable() { int captured = plain; };
    }

    Object local() {
        class Local implements Serializable { int l = hidden; }
        return new Local();
    }

    public class Deeper implements Serializable {
        public class Deepest implements Serializable { int z = hidden; }
    }
}
