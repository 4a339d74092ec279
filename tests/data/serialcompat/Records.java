package PKG;

import java.io.Serializable;

public class Records {
    public record Point(int x, int y) implements Serializable { }
    public record Named(String name) implements Serializable { private static final long serialVersionUID = 7L; }
    public record Plain(long a) { }
}
