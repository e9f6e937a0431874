/** The one-line generation summary the CLI prints on stderr and the chat's /stats shows. */
import type { GenerationStats } from "../engine/generate.ts";

const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

/**
 * Speed and KV memory of one generation. Worded so that it holds for every policy: the peak allocated and live
 * bytes, and what full KV stored as f16 would hold at the end (a pruned cache can peak above that early on, never a claim of it).
 */
export function statsLine(s: GenerationStats): string {
  return `${s.prefill_tokens} prompt tokens at ${s.prefill_tok_s.toFixed(1)} tok/s, ${s.decode_tokens} ` +
    `generated at ${s.decode_tok_s.toFixed(2)} tok/s; KV ${s.kv_policy} ${s.kv_dtype}: peak ` +
    `${kib(s.kv_bytes_peak)} allocated, ${kib(s.kv_bytes_live_peak)} live; full f16 KV at the end: ` +
    `${kib(s.kv_bytes_full_equivalent)}; ` +
    `${s.prune_rounds} pruning rounds`;
}
