/* unicode.h - the small amount of Unicode the tokenizers need: UTF-8
 * decode/encode, the general-category classes used by the BPE
 * pre-tokenizers (letter \p{L}, number \p{N}, punctuation \p{P},
 * White_Space \s) and the
 * GPT-2 byte <-> code point map. No normalisation, no case folding. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UNICODE_INVALID 0xFFFFFFFFu /* returned for a malformed UTF-8 sequence */

/* Length of the UTF-8 sequence announced by a lead byte, from its high
 * nibble (1 for ASCII and for stray continuation bytes, 2, 3 or 4). This is
 * the rule SentencePiece-style splitting uses; it does not validate. */
size_t unicode_utf8_len(uint8_t lead);

/* Decode one code point at s[0..len). *adv gets the bytes consumed (>= 1).
 * Malformed, overlong, surrogate or truncated sequences give
 * UNICODE_INVALID with *adv = 1. */
uint32_t unicode_utf8_decode(const uint8_t *s, size_t len, size_t *adv);

/* Encode cp (<= 0x10FFFF) into out; returns 1..4 bytes written. */
size_t unicode_utf8_encode(uint32_t cp, char out[4]);

/* Length of the longest prefix of s[0..len) that is a complete valid UTF-8
 * sequence run, and *incomplete_tail set when the remaining bytes are a
 * valid but unfinished sequence start (so more bytes may complete it). */
size_t unicode_utf8_valid_prefix(const uint8_t *s, size_t len, bool *incomplete_tail);

bool unicode_is_letter(uint32_t cp);     /* general category L* */
bool unicode_is_number(uint32_t cp);     /* general category N* */
bool unicode_is_punct(uint32_t cp);      /* general category P* */
bool unicode_is_whitespace(uint32_t cp); /* White_Space property */

/* GPT-2 byte-level BPE map: every byte maps to a printable code point
 * (bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF to themselves, the rest to 0x100+). */
uint32_t unicode_byte_to_cpt(uint8_t b);
/* Inverse; returns -1 for a code point no byte maps to. */
int unicode_cpt_to_byte(uint32_t cp);
