package dev.dequant4j.internal.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The JavaCPP and CUDA preset dependencies are optional: without them on the class path the library still links,
 * and probe() says what is missing instead of throwing NoClassDefFoundError.
 */
class ProbeIsolationTest {
    private static Path classes(Class<?> c) throws URISyntaxException {
        return Path.of(c.getProtectionDomain().getCodeSource().getLocation().toURI());
    }

    @Test
    void probeWithoutJavaCppOnTheClassPath() throws Exception {
        String java = ProcessHandle.current().info().command().orElseThrow();
        String cp = classes(CudaBackend.class) + File.pathSeparator + classes(ProbeMain.class);
        Process p = new ProcessBuilder(List.of(java, "--enable-native-access=ALL-UNNAMED", "-cp", cp,
                ProbeMain.class.getName())).redirectErrorStream(true).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "probe JVM finished");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        assertEquals(0, p.exitValue(), out);
        String natives = "natives are not in this build";
        String javacpp = "JavaCPP (org.bytedeco:javacpp:1.5.13";
        assertTrue(out.startsWith("false|") && (out.contains(natives) || out.contains(javacpp)), out);
        boolean built = getClass().getClassLoader().getResource(CudaRuntime.NATIVES) != null;
        assertTrue(out.contains(built ? javacpp : natives), out);
    }
}
