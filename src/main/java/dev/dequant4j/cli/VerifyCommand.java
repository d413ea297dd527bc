package dev.dequant4j.cli;

import dev.dequant4j.internal.export.Manifest;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "verify", mixinStandardHelpOptions = true,
        description = "Checks an exported directory against its dequant4j-manifest.json (sizes, sha256, headers).")
final class VerifyCommand implements Callable<Integer>, CliJson.Output {
    @Parameters(paramLabel = "DIR", description = "A directory written by 'dequant4j export'.")
    Path dir;

    @Option(names = "--json", description = "Print {\"directory\", \"ok\", \"problems\": [...]} as JSON.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public boolean json() {
        return json;
    }

    @Override
    public Integer call() {
        List<String> problems = Manifest.verify(dir);
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        if (json) {
            Map<String, JsonValue> m = new LinkedHashMap<>();
            m.put("directory", new JsonString(dir.toString()));
            m.put("ok", JsonBoolean.of(problems.isEmpty()));
            m.put("problems", new JsonArray(problems.stream().<JsonValue>map(JsonString::new).toList()));
            CliJson.print(out, m);
        } else if (problems.isEmpty()) {
            out.println("ok: " + dir + " matches its manifest");
            out.flush();
        }
        for (String p : problems) {
            err.println("error: " + p);
        }
        err.flush();
        return problems.isEmpty() ? 0 : 1;
    }
}
