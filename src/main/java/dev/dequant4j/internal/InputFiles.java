package dev.dequant4j.internal;

import dev.dequant4j.Dequant4jException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;

/**
 * The one rule for every file dequant4j reads from a model, adapter or export directory (weights, shards, index,
 * configs, tokenizer files, manifest):
 *
 * <ul>
 *   <li><b>links</b>: once every link is resolved, the file must be inside the directory, or, when the directory
 *       is a Hugging Face hub cache snapshot ({@code <repo>/snapshots/<revision>}), directly in that same
 *       repository's {@code <repo>/blobs/}, which is where the cache's own links lead. Any other link (to a
 *       sibling directory, to another repository's blobs, to {@code ~/.ssh}) is refused;</li>
 *   <li><b>kind</b>: it must be a regular file. Opening a FIFO blocks until a writer appears, and a device can be
 *       endless, so both are refused before the file is opened; a directory or dangling link where a file is
 *       expected is an error too, never a silent omission.</li>
 * </ul>
 */
public final class InputFiles {
    private InputFiles() {}

    /** Whether anything (a file, a directory, a FIFO, a link, even a dangling one) is at {@code file}. */
    public static boolean present(Path file) {
        return Files.exists(file, LinkOption.NOFOLLOW_LINKS);
    }

    /**
     * Checks {@code file}, an input of directory {@code dir}, against both rules and returns where it really is.
     *
     * @throws Dequant4jException naming the file when it is missing, a dangling link, a link that leaves the
     *     directory, or not a regular file
     */
    public static Path check(Path dir, Path file) {
        if (!present(file)) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, file, "no such file");
        }
        Path real;
        Path realDir;
        try {
            realDir = dir.toRealPath();
            real = file.toRealPath();
        } catch (NoSuchFileException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, file, "is a dangling link");
        } catch (IOException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, file, "cannot resolve: " + e.getMessage(), e);
        }
        if (!inside(realDir, real)) {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, "is a link that leads out of the directory (to " + real + "); refused");
        }
        requireRegular(file);
        return real;
    }

    /** Whether {@code real} may be read as a file of {@code realDir} (both with links resolved). */
    static boolean inside(Path realDir, Path real) {
        if (real.startsWith(realDir) && !real.equals(realDir)) {
            return true;
        }
        Path snapshots = realDir.getParent();
        if (snapshots == null || snapshots.getFileName() == null
                || !snapshots.getFileName().toString().equals("snapshots") || snapshots.getParent() == null) {
            return false;
        }
        return snapshots.getParent().resolve("blobs").equals(real.getParent());
    }

    /**
     * Refuses {@code file} unless it is a regular file once links are resolved; checked before every open, so that
     * no input can block the open or stream without end.
     */
    public static void requireRegular(Path file) {
        BasicFileAttributes a;
        try {
            a = Files.readAttributes(file, BasicFileAttributes.class);
        } catch (NoSuchFileException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, file, present(file) ? "is a dangling link" : "no such file");
        } catch (IOException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, file, "cannot read: " + e.getMessage(), e);
        }
        if (a.isDirectory()) {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, "is a directory, not a file");
        }
        if (!a.isRegularFile()) {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, "is not a regular file (a FIFO, socket or device); refused, as"
                    + " reading it could block or never end");
        }
    }
}
