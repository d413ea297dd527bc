package dev.dequant4j.cli;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.Printable;
import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.Map;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * The dequant4j command line. A failure is one line on stderr starting with {@code error:} (with {@code --json} also
 * a JSON error object on stdout, {@link CliJson}) and an exit code that says what kind of failure it was
 * ({@link #exitCode}, listed in {@code --help}). {@code --debug} adds the stack trace.
 */
@Command(name = "dequant4j", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Reads bitsandbytes-quantized checkpoints and LoRA adapters; exports plain FP16/BF16/F32 models.",
        subcommands = {InspectCommand.class, ExportCommand.class, VerifyCommand.class})
public final class Main implements Runnable {
    @Option(names = "--debug", scope = CommandLine.ScopeType.INHERIT, description = "Print stack traces of errors.")
    boolean debug;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(new CommandLine(this),
                "a command is required: inspect, export or verify");
    }

    /** Exit codes, as {@code --help} and the README list them. */
    static final int OK = 0;
    static final int BAD_INPUT = 1;
    static final int USAGE = 2;
    static final int OUTPUT_EXISTS = 3;
    static final int BACKEND = 4;
    static final int OUT_OF_MEMORY = 5;
    static final int INTERNAL = 6;
    static final int CANCELLED = 130;

    /** {@code --help}'s list of exit codes: picocli's "code:description" entries. */
    private static final Map<String, String> EXIT_CODES = exitCodeHelp();

    private static Map<String, String> exitCodeHelp() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put(OK + "", "Success.");
        m.put(BAD_INPUT + "", "Bad input or a failed run: a corrupt, unsupported or missing file, an adapter that"
                + " does not fit, a non-finite value, a failed read or write; verify found a problem.");
        m.put(USAGE + "", "Usage error: an unknown option, a missing or bad value.");
        m.put(OUTPUT_EXISTS + "", "The output exists (use --overwrite to replace it).");
        m.put(BACKEND + "", "The compute backend is not usable or failed (--backend cuda).");
        m.put(OUT_OF_MEMORY + "", "Out of memory (give the JVM more with -Xmx).");
        m.put(INTERNAL + "", "Internal error (a bug: please report it with the --debug output).");
        m.put(CANCELLED + "", "Cancelled or interrupted (Ctrl-C).");
        return java.util.Collections.unmodifiableMap(m);
    }

    /** The exit code of a run that failed with {@code kind}. */
    static int exitCode(Dequant4jException.Kind kind) {
        return switch (kind) {
            case CORRUPT_INPUT, UNSUPPORTED_INPUT, ADAPTER_MISMATCH, NON_FINITE, IO, INVALID_REQUEST -> BAD_INPUT;
            case OUTPUT_EXISTS -> OUTPUT_EXISTS;
            case BACKEND -> BACKEND;
            case CANCELLED -> CANCELLED;
        };
    }

    /** The exit code of a run that failed with {@code e}, which the command did not catch. */
    static int exitCode(Throwable e) {
        if (outOfMemory(e)) {
            return OUT_OF_MEMORY;
        }
        if (e instanceof Dequant4jException d) {
            return exitCode(d.kind());
        }
        return e instanceof IllegalArgumentException ? USAGE : INTERNAL;
    }

    /** The command line with its converters' settings and the exit codes in every command's help. */
    static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main()).setCaseInsensitiveEnumValuesAllowed(true);
        java.util.List<CommandLine> all = new java.util.ArrayList<>(cl.getSubcommands().values());
        all.add(cl);
        for (CommandLine c : all) {
            c.getCommandSpec().usageMessage().exitCodeListHeading("%nExit codes:%n").exitCodeList(EXIT_CODES);
        }
        return cl;
    }

    /**
     * Whether {@code args} are an export that will compute tensors, the only run worth a JVM with the Vector API
     * ({@link VectorRelaunch}): help, version, usage errors and {@code --dry-run} are answered by this JVM.
     */
    static boolean computesAnExport(String[] args) {
        CommandLine.ParseResult parsed;
        try {
            parsed = commandLine().parseArgs(args);
        } catch (CommandLine.ParameterException e) {
            return false;
        }
        return !helpRequested(parsed) && parsed.subcommand() != null
                && parsed.subcommand().commandSpec().userObject() instanceof ExportCommand e && !e.dryRun;
    }

    public static void main(String[] args) {
        VectorRelaunch.watchParent();
        var relaunch = VectorRelaunch.command(args, VectorRelaunch.Jvm.current());
        if (relaunch.isPresent()) {
            try {
                System.exit(VectorRelaunch.run(relaunch.get()));
            } catch (java.io.IOException e) {
                // The JVM could not be started again: export here, with the scalar kernels.
            } catch (InterruptedException e) {
                System.exit(CANCELLED);
            }
        }
        System.exit(run(args, new PrintWriter(System.out, true), new PrintWriter(System.err, true)));
    }

    /** Runs the command line and returns its exit code (for tests). */
    public static int run(String[] args, PrintWriter rawOut, PrintWriter rawErr) {
        // everything printed may quote a file: one sanitizer for all of it (JSON output is escaped anyway)
        PrintWriter out = Printable.writer(rawOut);
        PrintWriter err = Printable.writer(rawErr);
        boolean debug = java.util.Arrays.asList(args).contains("--debug");
        configureLogging(debug || java.util.Arrays.asList(args).contains("--verbose"));
        CommandLine cl = commandLine();
        cl.setOut(out);
        cl.setErr(err);
        CommandLine.IExecutionStrategy runLast = new CommandLine.RunLast();
        cl.setExecutionStrategy(parsed -> {
            if (helpRequested(parsed)) {
                // help and version are our own text, with its line breaks: not through the sanitizer
                cl.setOut(Printable.raw(out));
            }
            return runLast.execute(parsed);
        });
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (outOfMemory(ex)) {
                return outOfMemory(out, err, json(args));
            }
            String message = forCli(oneLine(ex));
            err.println("error: " + message);
            if (debug) {
                printStackTrace(ex, err);
            }
            err.flush();
            if (cmd.getCommand() instanceof CliJson.Output o && o.json()) {
                CliJson.printError(out, ex, message);
            }
            return exitCode(ex);
        });
        cl.setParameterExceptionHandler((ex, a) -> {
            err.println("error: " + ex.getMessage());
            if (ex.getCommandLine() != null) {
                err.println("Try '" + ex.getCommandLine().getCommandSpec().qualifiedName() + " --help' for usage.");
            }
            err.flush();
            if (json(a)) {
                CliJson.printError(out, "usage", null, null, oneLine(ex));
            }
            return USAGE;
        });
        try {
            return cl.execute(args);
        } catch (OutOfMemoryError e) {
            return outOfMemory(out, err, json(args));
        }
    }

    private static boolean helpRequested(CommandLine.ParseResult parsed) {
        for (CommandLine.ParseResult p = parsed; p != null; p = p.subcommand()) {
            if (p.isUsageHelpRequested() || p.isVersionHelpRequested()) {
                return true;
            }
        }
        return false;
    }

    private static boolean outOfMemory(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof OutOfMemoryError) {
                return true;
            }
        }
        return false;
    }

    private static boolean json(String[] args) {
        return java.util.Arrays.asList(args).contains("--json");
    }

    /**
     * What is left of an {@link OutOfMemoryError} that no size check foresaw: one line saying how much heap there was
     * and how to give more, instead of a trace, and under {@code --json} the error object as for any failure. The
     * output's temporary directory is removed as for any failure.
     */
    static int outOfMemory(PrintWriter out, PrintWriter err, boolean json) {
        long mib = Runtime.getRuntime().maxMemory() >> 20;
        String xmx = "-Xmx" + Math.max(2, 2 * ((mib + 1023) / 1024)) + "g";
        String message = "out of memory: the Java heap is " + mib + " MiB; give the JVM more with -Xmx, e.g."
                + " DEQUANT4J_OPTS=" + xmx + " bin/dequant4j ... or java " + xmx + " -jar dequant4j-cli.jar ...";
        err.println("error: " + message);
        err.flush();
        if (json) {
            CliJson.printError(out, "out_of_memory", null, null, message);
        }
        return OUT_OF_MEMORY;
    }

    /** The trace for --debug: its indentation kept, everything else through the sanitizer like all output. */
    private static void printStackTrace(Throwable ex, PrintWriter err) {
        java.io.StringWriter trace = new java.io.StringWriter();
        ex.printStackTrace(new PrintWriter(trace));
        PrintWriter raw = Printable.raw(err);
        trace.toString().lines().forEach(l -> raw.println(l.startsWith("\t") ? "\t" + Printable.of(l.substring(1))
                : Printable.of(l)));
    }

    /** Library log records (System.Logger, routed to java.util.logging) as single "level: message" lines. */
    private static void configureLogging(boolean verbose) {
        java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
        for (java.util.logging.Handler h : root.getHandlers()) {
            h.setFormatter(new java.util.logging.SimpleFormatter() {
                @Override
                public String format(java.util.logging.LogRecord r) {
                    return r.getLevel().getName().toLowerCase(java.util.Locale.ROOT) + ": "
                            + Printable.of(formatMessage(r)) + System.lineSeparator();
                }
            });
        }
        java.util.logging.Logger.getLogger("dev.dequant4j")
                .setLevel(verbose ? java.util.logging.Level.INFO : java.util.logging.Level.WARNING);
    }

    /** API options that library messages name, and the flags that set them here. */
    private static final String[][] FLAGS = {
        {"Export.overwrite(true)", "--overwrite"},
        {"Export.allowNonFinite(true)", "--allow-non-finite"},
        {"Backend.CUDA", "--backend cuda"},
        {"LoraAdapter.open", "--adapter"},
    };

    /** A library message as the command line says it: with its flags instead of the API options they set. */
    static String forCli(String message) {
        String m = message;
        for (String[] f : FLAGS) {
            m = m.replace(f[0], f[1]);
        }
        return m;
    }

    /** The message on one line; exceptions that are not about the input also name their class. */
    static String oneLine(Throwable e) {
        String m = e.getMessage();
        boolean aboutInput = e instanceof Dequant4jException || e instanceof IllegalArgumentException
                || e instanceof java.io.IOException;
        if (m == null) {
            m = e.getClass().getSimpleName();
        } else if (!aboutInput) {
            m = e.getClass().getSimpleName() + ": " + m;
        }
        return Printable.of(m);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"dequant4j " + (v != null ? v : "(development build)"),
                "Java " + Runtime.version()};
        }
    }
}
