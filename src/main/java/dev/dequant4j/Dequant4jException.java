package dev.dequant4j;

import java.nio.file.Path;
import java.util.Optional;

/**
 * Bad input or a failed run: a malformed or unsupported file, an adapter that does not fit its base, an I/O error.
 * The message is one line that names the file and, where there is one, the tensor.
 */
public class Dequant4jException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final transient Path file;
    private final String tensor;
    private final String detail;

    public Dequant4jException(Path file, String tensor, String detail, Throwable cause) {
        super(compose(file, tensor, detail), cause);
        this.file = file;
        this.tensor = tensor;
        this.detail = detail;
    }

    public Dequant4jException(Path file, String tensor, String detail) {
        this(file, tensor, detail, null);
    }

    public Dequant4jException(Path file, String detail, Throwable cause) {
        this(file, null, detail, cause);
    }

    public Dequant4jException(Path file, String detail) {
        this(file, null, detail, null);
    }

    public Dequant4jException(String detail) {
        this(null, null, detail, null);
    }

    /**
     * Longest message, and longest tensor name within it: a hostile file may hold a name or value of 100 MB, which
     * must not become a 100 MB error line ({@link #tensor()} and {@link #detail()} keep the whole text).
     */
    static final int MAX_MESSAGE_CHARS = 2000;
    static final int MAX_TENSOR_CHARS = 200;

    private static String compose(Path file, String tensor, String detail) {
        StringBuilder sb = new StringBuilder();
        if (file != null) {
            sb.append(file).append(": ");
        }
        if (tensor != null) {
            sb.append("tensor '").append(cut(tensor, MAX_TENSOR_CHARS)).append("': ");
        }
        sb.append(cut(String.valueOf(detail), Math.max(0, MAX_MESSAGE_CHARS - sb.length())));
        return oneLine(sb);
    }

    private static String cut(String s, int max) {
        return s.length() <= max ? s : s.substring(0, max) + "... (" + (s.length() - max) + " more characters)";
    }

    /** Control characters (a tensor name may hold any) would break the message's single line. */
    private static String oneLine(CharSequence s) {
        StringBuilder sb = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            sb.append(Character.isISOControl(c) ? ' ' : c);
        }
        return sb.toString();
    }

    /** The file the problem is in, if it is about one. */
    public Optional<Path> file() {
        return Optional.ofNullable(file);
    }

    /** The tensor the problem is about, if any. */
    public Optional<String> tensor() {
        return Optional.ofNullable(tensor);
    }

    /** The message without the file and tensor. */
    public String detail() {
        return detail;
    }
}
