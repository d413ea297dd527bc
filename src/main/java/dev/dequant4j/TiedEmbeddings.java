package dev.dequant4j;

/**
 * What an adapter that changes the input embedding or the output layer of a model that ties them (Gemma, GPT-2,
 * small Llama and Qwen models: {@code tie_word_embeddings}, no {@code lm_head.weight} in the checkpoint) exports as.
 * The two differ because PEFT trains such a model untied (unless the adapter says {@code ensure_weight_tying}) but
 * its {@code merge_and_unload} adds every delta to the one shared tensor. See docs/MERGE.md.
 */
public enum TiedEmbeddings {
    /**
     * The model the adapter trained and evaluated (PEFT's unmerged forward), the default. A LoRA on the output layer
     * changes only the output layer and a LoRA on the embedding only the embedding, so the export writes both
     * tensors and sets {@code tie_word_embeddings: false}; the side the adapter did not change keeps the base's
     * values. An adapter saved with {@code ensure_weight_tying: true} trained one shared set of factors for both
     * sides: it is applied once to the shared tensor, which stays tied.
     */
    AS_TRAINED,
    /**
     * As PEFT's {@code merge_and_unload()}: every delta on either side is added to the shared tensor, which stays
     * tied, so a LoRA on the output layer also changes the input embedding (and with {@code ensure_weight_tying} the
     * shared factors are added twice, as PEFT does). Only for bit-compatibility with a model merged by PEFT.
     */
    MERGE_AND_UNLOAD
}
