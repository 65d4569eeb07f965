/* minigpt._bpe: byte-level BPE (see bpe.c). Shared by bpe.c and the cffi builder. */
#ifndef MINIGPT_BPE_H
#define MINIGPT_BPE_H
#include <stdint.h>

enum { BPE_NONE = 0, BPE_GPT2 = 1, BPE_GPT4 = 2 };

typedef struct bpe_t bpe_t;
typedef struct bpe_cache_t bpe_cache_t;
typedef struct bpe_counter_t bpe_counter_t;

int bpe_set_classes(const uint8_t *table, int64_t n);
int64_t bpe_split(int pattern, const uint8_t *s, int64_t n, int64_t *ends);

bpe_t *bpe_new(const uint8_t *blob, const int64_t *offsets, int32_t n_vocab, int *err);
void bpe_free(bpe_t *b);
bpe_cache_t *bpe_cache_new(void);
void bpe_cache_free(bpe_cache_t *c);
int64_t bpe_encode(const bpe_t *b, bpe_cache_t *c, int pattern, const uint8_t *s, int64_t n, int32_t *out);
int64_t bpe_encode_many(const bpe_t *b, bpe_cache_t *c, int pattern, const uint8_t *s, const int64_t *offs,
                        int64_t n_docs, int32_t *out, int64_t *out_offs);

bpe_counter_t *bpe_counter_new(void);
void bpe_counter_free(bpe_counter_t *c);
int64_t bpe_counter_size(const bpe_counter_t *c);
int64_t bpe_counter_bytes(const bpe_counter_t *c);
int bpe_counter_add_chunk(bpe_counter_t *c, const uint8_t *s, int64_t n, int64_t count);
int bpe_counter_add(bpe_counter_t *c, int pattern, const uint8_t *s, int64_t n);
void bpe_counter_dump(const bpe_counter_t *c, uint8_t *blob, int64_t *ends, int64_t *counts);
int64_t bpe_train(const bpe_counter_t *C, int32_t vocab_size, int32_t **merges_out);
void bpe_free_ints(int32_t *p);

#endif
