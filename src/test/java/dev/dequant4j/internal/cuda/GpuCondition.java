package dev.dequant4j.internal.cuda;

import org.junit.jupiter.api.extension.ConditionEvaluationResult;
import org.junit.jupiter.api.extension.ExecutionCondition;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Disables GPU tests where CUDA is not usable, each test with the probe's reason, so that reports show every
 * skipped test and why (a failed assumption in {@code @BeforeAll} shows as zero tests).
 */
public final class GpuCondition implements ExecutionCondition {
    @Override
    public ConditionEvaluationResult evaluateExecutionCondition(ExtensionContext context) {
        if (context.getTestMethod().isEmpty()) {
            return ConditionEvaluationResult.enabled("checked per test");
        }
        return Gpu.AVAILABILITY.usable() ? ConditionEvaluationResult.enabled(Gpu.AVAILABILITY.reason())
                : ConditionEvaluationResult.disabled("no usable GPU: " + Gpu.AVAILABILITY.reason());
    }
}
