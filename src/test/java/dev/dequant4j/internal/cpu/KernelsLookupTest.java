package dev.dequant4j.internal.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * How {@link Kernels} chooses: the Vector API kernels whenever they can be constructed (surefire passes
 * {@code --add-modules jdk.incubator.vector}), the reference when forced or when the checks fail. The lookup itself
 * is called directly with the properties set, since {@link Kernels#get()} decides once per JVM; one test starts a
 * child JVM to check the whole path.
 */
class KernelsLookupTest {
    private static final List<String> PROPERTIES = List.of("dequant4j.cpu", "dequant4j.vector.maxJava");

    @AfterEach
    void restore() {
        PROPERTIES.forEach(System::clearProperty);
        // The lookup records its reason in a static; put back the one that matches Kernels.get().
        VectorLookup.lookup();
    }

    private static void assumeVectorKernels() {
        assumeTrue(BaseKernelsTestCase.VECTOR != null, "the Vector API kernels cannot be constructed on this JVM");
    }

    @Test
    void picksTheVectorKernelsWhenTheyCanRun() {
        assumeVectorKernels();
        assertEquals(VectorKernels.class, Kernels.get().getClass());
        assertTrue(Kernels.get().name().startsWith("panama-"), Kernels.get().name());
        assertTrue(Kernels.describe().contains("Vector API"), Kernels.describe());
    }

    @Test
    void propertyForcesTheReference() {
        System.setProperty("dequant4j.cpu", "scalar");
        assertSame(ScalarKernels.INSTANCE, VectorLookup.lookup());
        assertTrue(VectorLookup.reason().contains("forced"), VectorLookup.reason());
    }

    @Test
    void propertyAsksForTheVectorKernels() {
        assumeVectorKernels();
        System.setProperty("dequant4j.cpu", "vector");
        assertInstanceOf(VectorKernels.class, VectorLookup.lookup());
    }

    @Test
    void javaNewerThanTestedFallsBackUnlessVectorIsDemanded() {
        int older = Runtime.version().feature() - 1;
        System.setProperty("dequant4j.vector.maxJava", Integer.toString(older));
        assertSame(ScalarKernels.INSTANCE, VectorLookup.lookup());
        assertTrue(VectorLookup.reason().contains("-Ddequant4j.vector.maxJava="), VectorLookup.reason());
        System.setProperty("dequant4j.cpu", "vector");
        IllegalStateException e = assertThrows(IllegalStateException.class, VectorLookup::lookup);
        assertTrue(e.getMessage().startsWith("-Ddequant4j.cpu=vector, but Java "), e.getMessage());
    }

    @Test
    void childJvmPicksTheVectorKernelsUnlessTheReferenceIsForced() throws IOException, InterruptedException {
        assumeVectorKernels();
        assertEquals(BaseKernelsTestCase.VECTOR.name(), childKernels());
        assertEquals("scalar", childKernels("-Ddequant4j.cpu=scalar"));
    }

    /** The kernels a fresh JVM (with the Vector API module) picks through {@link Kernels#get()}. */
    private static String childKernels(String... properties) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java")
                .toString(), "--add-modules=jdk.incubator.vector"));
        command.addAll(List.of(properties));
        command.addAll(List.of("-cp", System.getProperty("java.class.path"), PrintKernels.class.getName()));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "child JVM did not finish");
        assertEquals(0, p.exitValue(), out);
        return out.lines().filter(l -> l.startsWith("kernels=")).findFirst()
                .orElseThrow(() -> new AssertionError("no kernels line in: " + out)).substring("kernels=".length());
    }

    /** Main class of the child JVM. */
    static final class PrintKernels {
        public static void main(String[] args) {
            System.out.println("kernels=" + Kernels.get().name());
        }
    }
}
