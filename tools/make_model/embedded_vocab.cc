// The BERT uncased vocabulary (assets/vocab/vocab.txt), embedded at build time so that
// embedserve-make-model works from any directory of a fresh clone.
#ifndef EMBEDSERVE_VOCAB_FILE
#error "EMBEDSERVE_VOCAB_FILE must name the vocabulary to embed"
#endif

#define EMBEDSERVE_STR2(x) #x
#define EMBEDSERVE_STR(x) EMBEDSERVE_STR2(x)

__asm__(".pushsection .rodata\n"
        ".global embedserve_embedded_vocab_begin\n"
        "embedserve_embedded_vocab_begin:\n"
        ".incbin \"" EMBEDSERVE_STR(EMBEDSERVE_VOCAB_FILE) "\"\n"
        ".global embedserve_embedded_vocab_end\n"
        "embedserve_embedded_vocab_end:\n"
        ".byte 0\n"
        ".popsection\n");
