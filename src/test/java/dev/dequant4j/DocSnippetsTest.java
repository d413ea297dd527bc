package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.spi.ToolProvider;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every Java snippet of the user documentation compiles against the library as written: the {@code ```java} blocks
 * of README.md and docs/*.md, and the {@code <pre>{@code ...}</pre>} examples in the API's javadoc. A snippet is
 * its import lines followed by statements; the statements become the body of a method. A javadoc example that
 * imports nothing is read as the reader of that page would: with {@link #JAVADOC_IMPORTS}; a markdown snippet must
 * bring its own.
 */
class DocSnippetsTest {
    private static final Pattern MARKDOWN = Pattern.compile("(?ms)^```java\\n(.*?)^```$");
    private static final Pattern JAVADOC = Pattern.compile("(?s)<pre>\\{@code\\n(.*?)\\n\\s*\\* }</pre>");
    private static final String JAVADOC_IMPORTS = """
            import dev.dequant4j.*;
            import java.nio.file.Path;
            import java.util.List;
            """;

    @TempDir
    Path tmp;

    record Snippet(String origin, String code) {}

    @Test
    void everyDocumentedSnippetCompiles() throws Exception {
        List<Snippet> snippets = new ArrayList<>();
        List<Path> docs = new ArrayList<>(List.of(Path.of("README.md")));
        try (Stream<Path> s = Files.list(Path.of("docs"))) {
            s.filter(p -> p.toString().endsWith(".md")).sorted().forEach(docs::add);
        }
        for (Path doc : docs) {
            snippets.addAll(find(doc, MARKDOWN, Files.readString(doc)));
        }
        try (Stream<Path> s = Files.list(Path.of("src/main/java/dev/dequant4j"))) {
            for (Path src : s.filter(p -> p.toString().endsWith(".java")).sorted().toList()) {
                snippets.addAll(find(src, JAVADOC, Files.readString(src)).stream()
                        .map(n -> new Snippet(n.origin(), javadocCode(n.code()))).toList());
            }
        }
        assertTrue(snippets.stream().anyMatch(n -> n.origin().startsWith("README.md")), "no snippet in README.md");
        assertTrue(snippets.stream().anyMatch(n -> n.origin().contains("package-info.java")),
                "no example in package-info.java");

        List<String> sources = new ArrayList<>();
        for (int i = 0; i < snippets.size(); i++) {
            sources.add(write(i, snippets.get(i)).toString());
        }
        List<String> args = new ArrayList<>(List.of("-d", tmp.resolve("out").toString(), "-proc:none", "-cp", classes().toString()));
        args.addAll(sources);
        StringWriter out = new StringWriter();
        int rc = ToolProvider.findFirst("javac").orElseThrow()
                .run(new PrintWriter(out), new PrintWriter(out), args.toArray(String[]::new));
        assertEquals(0, rc, "a documented snippet does not compile:\n" + out + "\nsnippets: "
                + snippets.stream().map(Snippet::origin).toList());
    }

    private static List<Snippet> find(Path file, Pattern p, String text) {
        List<Snippet> out = new ArrayList<>();
        Matcher m = p.matcher(text);
        while (m.find()) {
            int line = (int) text.substring(0, m.start()).lines().count() + 1;
            out.add(new Snippet(file + ":" + line, m.group(1)));
        }
        return out;
    }

    private static String javadocCode(String comment) {
        String code = comment.replaceAll("(?m)^\\s*\\* ?", "");
        return code.lines().anyMatch(l -> l.startsWith("import ")) ? code : JAVADOC_IMPORTS + code;
    }

    /** One class per snippet: its imports on top, its statements in a method that may throw anything. */
    private Path write(int i, Snippet s) throws IOException {
        List<String> imports = new ArrayList<>();
        List<String> body = new ArrayList<>();
        for (String line : s.code().lines().toList()) {
            (line.startsWith("import ") && body.isEmpty() ? imports : body).add(line);
        }
        assertFalse(body.stream().allMatch(String::isBlank), s.origin() + ": empty snippet");
        String name = "Snippet" + i;
        String src = "package snippets;\n// " + s.origin() + "\n" + String.join("\n", imports) + "\n"
                + "class " + name + " {\n    void run() throws Exception {\n" + String.join("\n", body)
                + "\n    }\n}\n";
        Path file = tmp.resolve("snippets").resolve(name + ".java");
        Files.createDirectories(file.getParent());
        Files.writeString(file, src);
        return file;
    }

    private static Path classes() throws URISyntaxException {
        return Path.of(Checkpoint.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    }
}
