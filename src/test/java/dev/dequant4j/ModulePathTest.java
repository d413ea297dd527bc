package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.module.ModuleDescriptor;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Guards the module-path run of the API tests (the pom's module-path profile): surefire falls back to the class
 * path without a word when it cannot read the descriptor, so the run checks that it really is inside the module.
 */
class ModulePathTest {
    @Test
    void theModulePathRunIsInsideTheNamedModule() {
        assumeTrue(Boolean.getBoolean("dequant4j.test.modulePath"), "runs in the module-path execution only");
        Module library = Checkpoint.class.getModule();
        assertEquals("dev.dequant4j", library.getName());
        assertEquals(library, ModulePathTest.class.getModule(), "the tests are patched into the module");
        assertEquals(List.of("dev.dequant4j"),
                library.getDescriptor().exports().stream().map(ModuleDescriptor.Exports::source).toList());
    }
}
