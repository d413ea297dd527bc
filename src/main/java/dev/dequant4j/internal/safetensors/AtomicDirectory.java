package dev.dequant4j.internal.safetensors;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.concurrent.ThreadLocalRandom;

/**
 * An output directory that appears complete or not at all. Everything is written into a temporary directory beside
 * the target ({@code .<name>.dequant4j-tmp-<pid>-<random>}); {@link #commit()} fsyncs it and renames it into place.
 * Closing without a commit, an exception, or an interrupt (a shutdown hook) removes it. A temporary directory left
 * by a killed process is recognised by its name and removed by the next run once its owner is gone.
 */
public final class AtomicDirectory implements AutoCloseable {
    private static final String TMP_MARK = ".dequant4j-tmp-";
    private static final String OLD_MARK = ".dequant4j-old-";

    /** Fault injection for tests: called before each fsync and rename of the output, to make one of them fail. */
    interface Faults {
        void before(String step, Path path) throws IOException;
    }

    static volatile Faults faults = (step, path) -> { };

    private final Path target;
    private final Path temp;
    private final boolean overwrite;
    /** The outermost directory {@link #create} made to hold the target, or null if its parent existed. */
    private final Path createdParent;
    private final Thread cleanupHook;
    private volatile boolean done;

    private AtomicDirectory(Path target, Path temp, boolean overwrite, Path createdParent) {
        this.target = target;
        this.temp = temp;
        this.overwrite = overwrite;
        this.createdParent = createdParent;
        this.cleanupHook = new Thread(() -> {
            // Workers may still be creating files while the JVM shuts down: delete until the directory is gone.
            for (int attempt = 0; attempt < 50 && !done && Files.exists(temp, LinkOption.NOFOLLOW_LINKS); attempt++) {
                deleteRecursively(temp);
                if (Files.exists(temp, LinkOption.NOFOLLOW_LINKS)) {
                    try {
                        Thread.sleep(20);
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }
        }, "dequant4j-output-cleanup");
    }

    /**
     * Creates the temporary directory for {@code target}. An existing target is refused unless {@code overwrite};
     * even then only a directory is replaced, never a file.
     */
    public static AtomicDirectory create(Path target, boolean overwrite) {
        Path abs = target.toAbsolutePath().normalize();
        Path parent = abs.getParent();
        if (parent == null || abs.getFileName() == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, target, "cannot write output to the file system root");
        }
        // first, so that a previous output put back from a killed run counts as existing
        removeStale(parent, abs.getFileName().toString());
        checkTarget(target, overwrite);
        Path createdParent = null;
        for (Path p = parent; p != null && !Files.exists(p, LinkOption.NOFOLLOW_LINKS); p = p.getParent()) {
            createdParent = p;
        }
        try {
            Files.createDirectories(parent);
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, parent, "cannot create the output's parent directory: " + e.getMessage(), e);
        }
        String name = "." + abs.getFileName() + TMP_MARK + ProcessHandle.current().pid() + "-"
                + Long.toHexString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE);
        Path temp = parent.resolve(name);
        try {
            Files.createDirectory(temp);
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, parent, "cannot create a temporary output directory: " + e.getMessage(), e);
        }
        AtomicDirectory d = new AtomicDirectory(abs, temp, overwrite, createdParent);
        Runtime.getRuntime().addShutdownHook(d.cleanupHook);
        return d;
    }

    /**
     * Refuses an existing {@code target} unless {@code overwrite}, and any target that is not a directory, as
     * {@link #create} does, without touching the file system.
     */
    public static void checkTarget(Path target, boolean overwrite) {
        Path abs = target.toAbsolutePath().normalize();
        if (abs.getParent() == null || abs.getFileName() == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, target, "cannot write output to the file system root");
        }
        if (Files.exists(abs, LinkOption.NOFOLLOW_LINKS)) {
            if (!overwrite) {
                throw new Dequant4jException(Kind.OUTPUT_EXISTS, target, "output already exists (use Export.overwrite(true) to replace it)");
            }
            if (!Files.isDirectory(abs, LinkOption.NOFOLLOW_LINKS)) {
                throw new Dequant4jException(Kind.OUTPUT_EXISTS, target, "output exists and is not a directory; refusing to replace it");
            }
        }
    }

    /** The temporary directory to write into. */
    public Path dir() {
        return temp;
    }

    public Path target() {
        return target;
    }

    /**
     * Removes temporary directories of {@code name} whose owning process no longer runs. A previous output that such
     * a process had moved aside ({@code .<name>.dequant4j-old-...}) is put back if nothing took its place.
     */
    static void removeStale(Path parent, String name) {
        String prefix = "." + name + TMP_MARK;
        String oldPrefix = "." + name + OLD_MARK;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(parent, p -> {
            String f = p.getFileName().toString();
            return f.startsWith(prefix) || f.startsWith(oldPrefix);
        })) {
            for (Path p : ds) {
                String f = p.getFileName().toString();
                String rest = f.substring(f.startsWith(prefix) ? prefix.length() : oldPrefix.length());
                int dash = rest.indexOf('-');
                long pid;
                try {
                    pid = Long.parseLong(dash < 0 ? rest : rest.substring(0, dash));
                } catch (NumberFormatException e) {
                    continue;
                }
                boolean alive = pid != ProcessHandle.current().pid()
                        && ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false);
                if (!alive && pid != ProcessHandle.current().pid()) {
                    Path target = parent.resolve(name);
                    if (f.startsWith(oldPrefix) && !Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
                        // killed between moving the previous output aside and moving the new one in: the previous
                        // output is the only copy, so it goes back, and stays where it is if it cannot
                        try {
                            Files.move(p, target, StandardCopyOption.ATOMIC_MOVE);
                        } catch (IOException e) {
                            // left where it is, for the user
                        }
                        continue;
                    }
                    deleteRecursively(p);
                }
            }
        } catch (IOException e) {
            // Stale temporaries are only litter; failing to list them must not stop a new run.
        }
    }

    /** Fsyncs every file and the directory, then renames the temporary directory to the target. */
    public void commit() {
        if (done) {
            throw new IllegalStateException("already committed or closed");
        }
        try {
            syncTree(temp);
            Path old = null;
            if (Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
                if (!overwrite) {
                    throw new Dequant4jException(Kind.OUTPUT_EXISTS, target, "output appeared while writing; not replacing it");
                }
                old = target.resolveSibling("." + target.getFileName() + OLD_MARK + ProcessHandle.current().pid()
                        + "-" + Long.toHexString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE));
                faults.before("rename", target);
                Files.move(target, old, StandardCopyOption.ATOMIC_MOVE);
            }
            try {
                faults.before("rename", temp);
                Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE);
            } catch (IOException e) {
                if (old != null) {
                    restore(old, e);
                }
                throw e;
            }
            done = true;
            syncDir(target.getParent());
            if (old != null) {
                deleteRecursively(old);
            }
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, target, "cannot move the finished output into place: " + e.getMessage(), e);
        } finally {
            removeHook();
        }
    }

    /** The new output could not take the old one's place: the old one goes back, or the error says where it is. */
    private void restore(Path old, IOException cause) {
        try {
            Files.move(old, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            cause.addSuppressed(e);
            throw new Dequant4jException(Kind.IO, target, "cannot move the finished output into place (" + cause.getMessage()
                    + ") nor the previous output back; it is in " + old, cause);
        }
    }

    private void removeHook() {
        try {
            Runtime.getRuntime().removeShutdownHook(cleanupHook);
        } catch (IllegalStateException shuttingDown) {
            // the hook is running or about to; it checks 'done'
        }
    }

    /** Removes the temporary directory unless it was committed. */
    @Override
    public void close() {
        if (!done) {
            done = true;
            deleteRecursively(temp);
            removeCreatedParents();
            removeHook();
        }
    }

    /** A failed export leaves no trace: the directories made for it go too, innermost first, while empty. */
    private void removeCreatedParents() {
        if (createdParent == null) {
            return;
        }
        for (Path p = temp.getParent(); p != null && p.startsWith(createdParent); p = p.getParent()) {
            try {
                Files.delete(p);
            } catch (IOException e) {
                return; // not empty any more (someone else put something there), or gone: leave it
            }
        }
    }

    private static void syncTree(Path dir) throws IOException {
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) {
                if (Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS)) {
                    syncTree(p);
                } else if (Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
                    try (FileChannel ch = FileChannel.open(p, StandardOpenOption.WRITE)) {
                        faults.before("fsync", p);
                        ch.force(true);
                    }
                }
            }
        }
        syncDir(dir);
    }

    static void syncDir(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException e) {
            // Some file systems cannot fsync a directory; the rename is still atomic there.
        }
    }

    public static void deleteRecursively(Path root) {
        if (!Files.exists(root, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try {
            Files.walkFileTree(root, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                    Files.deleteIfExists(file);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult visitFileFailed(Path file, IOException exc) {
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path d, IOException exc) throws IOException {
                    Files.deleteIfExists(d);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            // best effort: a leftover is recognised and removed by the next run
        }
    }
}
