package dev.dequant4j.internal.export;

import dev.dequant4j.Dequant4jException;
import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Collection;
import java.util.HashMap;
import java.util.Map;

/**
 * The rule that keeps an export from destroying what it reads: the target, and everything under it that
 * {@code --overwrite} would delete, must share no file with the inputs. Files are compared by identity (device and
 * inode, with links resolved), not by name, so a hub cache's blobs reached through its snapshot's links, a hard
 * link, or the same directory under another spelling are all caught; an input directory under the target is caught
 * by comparing real paths.
 */
final class OutputPlacement {
    private OutputPlacement() {}

    static void check(Path target, Collection<Path> inputDirs, Collection<Path> inputFiles) {
        Path realTarget = realOrSelf(target);
        for (Path in : inputDirs) {
            Path real = realOrSelf(in.toAbsolutePath().normalize());
            if (real.startsWith(realTarget)) {
                throw new Dequant4jException(Dequant4jException.Kind.INVALID_REQUEST, target, "output would replace an input (" + in
                        + "); choose another output directory");
            }
        }
        if (!Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        Map<Object, Path> byIdentity = new HashMap<>();
        for (Path f : inputFiles) {
            try {
                byIdentity.put(identity(f, Files.readAttributes(f, BasicFileAttributes.class)), f);
            } catch (IOException e) {
                throw new Dequant4jException(Dequant4jException.Kind.IO, f, "cannot read: " + e.getMessage(), e);
            }
        }
        try {
            Files.walkFileTree(target, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) {
                    Path input = attrs.isRegularFile() ? byIdentity.get(identity(file, attrs)) : null;
                    if (input != null) {
                        throw new Dequant4jException(Dequant4jException.Kind.INVALID_REQUEST, target, "output would replace an input: " + file + " is "
                                + input + "; choose another output directory");
                    }
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, target, "cannot read the existing output: " + e.getMessage(), e);
        }
    }

    /** The file's identity: its file key where the file system has one (device and inode), else its real path. */
    private static Object identity(Path file, BasicFileAttributes attrs) {
        return attrs.fileKey() != null ? attrs.fileKey() : realOrSelf(file);
    }

    private static Path realOrSelf(Path p) {
        try {
            return p.toRealPath();
        } catch (IOException e) {
            return p;
        }
    }
}
