package dev.dequant4j;

import java.nio.file.Path;
import java.util.Optional;

/**
 * Bad input or a failed run: a malformed or unsupported file, an adapter that does not fit its base, an I/O error.
 * The message is one line that names the file and, where there is one, the tensor; {@link #kind()} says which of a
 * small set of failures it is, so that a caller can act on it without reading the text.
 */
public class Dequant4jException extends RuntimeException {
    private static final long serialVersionUID = 2L;

    /** What went wrong, as a caller would act on it. The set is closed: a new kind is a new minor version. */
    public enum Kind {
        /** An input file is malformed: bad header or JSON, offsets out of range, truncated, not what it claims. */
        CORRUPT_INPUT,
        /** An input is well-formed but holds something dequant4j does not handle (a format, layout or option). */
        UNSUPPORTED_INPUT,
        /** An adapter (or a 16-bit base) does not fit the checkpoint it is applied to. */
        ADAPTER_MISMATCH,
        /** The output exists and {@link Export#overwrite(boolean)} was not set (or it appeared while writing). */
        OUTPUT_EXISTS,
        /** A tensor would hold NaN or infinity and {@link Export#allowNonFinite(boolean)} was not set. */
        NON_FINITE,
        /** The run was cancelled through its {@link ProgressListener} or its thread was interrupted. */
        CANCELLED,
        /** The file system failed: a missing or unreadable file, a failed write, no space left. */
        IO,
        /** The chosen compute backend is not usable here or failed (CUDA natives, driver, device memory). */
        BACKEND,
        /** The call asked for something the object cannot give: an absent tensor, too large an array, a closed object. */
        INVALID_REQUEST
    }

    /** What went wrong. */
    private final Kind kind;
    private final transient Path file;
    /** The tensor the problem is about, or null. */
    private final String tensor;
    /** The message without the file and tensor. */
    private final String detail;

    /**
     * A failure about a file and one of its tensors.
     *
     * @param kind what went wrong
     * @param file the file the problem is in, or {@code null}
     * @param tensor the tensor the problem is about, or {@code null}
     * @param detail the message without the file and tensor
     * @param cause the underlying exception, or {@code null}
     */
    public Dequant4jException(Kind kind, Path file, String tensor, String detail, Throwable cause) {
        super(compose(file, tensor, detail), cause);
        this.kind = java.util.Objects.requireNonNull(kind, "kind");
        this.file = file;
        this.tensor = tensor;
        this.detail = detail;
    }

    /**
     * A failure about a file and one of its tensors, with no underlying exception.
     *
     * @param kind what went wrong
     * @param file the file the problem is in, or {@code null}
     * @param tensor the tensor the problem is about, or {@code null}
     * @param detail the message without the file and tensor
     */
    public Dequant4jException(Kind kind, Path file, String tensor, String detail) {
        this(kind, file, tensor, detail, null);
    }

    /**
     * A failure about a file as a whole.
     *
     * @param kind what went wrong
     * @param file the file the problem is in, or {@code null}
     * @param detail the message without the file
     * @param cause the underlying exception, or {@code null}
     */
    public Dequant4jException(Kind kind, Path file, String detail, Throwable cause) {
        this(kind, file, null, detail, cause);
    }

    /**
     * A failure about a file as a whole, with no underlying exception.
     *
     * @param kind what went wrong
     * @param file the file the problem is in, or {@code null}
     * @param detail the message without the file
     */
    public Dequant4jException(Kind kind, Path file, String detail) {
        this(kind, file, null, detail, null);
    }

    /**
     * A failure about no file in particular.
     *
     * @param kind what went wrong
     * @param detail the message
     */
    public Dequant4jException(Kind kind, String detail) {
        this(kind, null, null, detail, null);
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

    /**
     * Control and format characters (a tensor name may hold any) would break the message's single line, or rewrite
     * or reorder it on a terminal.
     */
    private static String oneLine(CharSequence s) {
        return dev.dequant4j.internal.Printable.of(s);
    }

    /**
     * What went wrong.
     *
     * @return the kind of failure, never {@code null}
     */
    public Kind kind() {
        return kind;
    }

    /**
     * The file the problem is in, if it is about one.
     *
     * @return the file, or empty
     */
    public Optional<Path> file() {
        return Optional.ofNullable(file);
    }

    /**
     * The tensor the problem is about, if any.
     *
     * @return the tensor's name, or empty
     */
    public Optional<String> tensor() {
        return Optional.ofNullable(tensor);
    }

    /**
     * The message without the file and tensor.
     *
     * @return the detail text
     */
    public String detail() {
        return detail;
    }
}
