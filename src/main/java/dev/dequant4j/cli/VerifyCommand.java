package dev.dequant4j.cli;

import dev.dequant4j.internal.export.Manifest;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "verify", mixinStandardHelpOptions = true,
        description = "Checks an exported directory against its dequant4j-manifest.json (sizes, sha256, headers).")
final class VerifyCommand implements Callable<Integer> {
    @Parameters(paramLabel = "DIR", description = "A directory written by 'dequant4j export'.")
    Path dir;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        List<String> problems = Manifest.verify(dir);
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        if (problems.isEmpty()) {
            out.println("ok: " + dir + " matches its manifest");
            out.flush();
            return 0;
        }
        for (String p : problems) {
            err.println("error: " + p);
        }
        err.flush();
        return 1;
    }
}
