/** Embedding lookup on the GPU from a chunked weight table. */
import code from "../../wgsl/embedding.wgsl" with { type: "text" };
import type { Binding, GpuContext } from "../gpu/context.ts";
import { scaleStride, type Weight, weightRowBytes } from "../gpu/weights.ts";
import { dummyBinding } from "./matvec.ts";

const DTYPE_CODE = { f32: 0, bf16: 1, f16: 2, q8: 3, q4: 4 } as const;

/**
 * Records out[t, :] = table[ids[t], :] as f32 for t < tokens.
 * Shapes: table a {@link Weight} [vocab, dim] (f32, bf16, f16, q8 or q4 — dequantized here —, any number of
 * row chunks), ids [tokens] u32,
 * out [tokens, dim] f32. One dispatch per chunk; each writes only the tokens whose id falls in its rows.
 * Out-of-range ids (≥ vocab, including a negative id reinterpreted as u32) give a row of zeros — never an
 * out-of-bounds read, and never a silently valid-looking embedding as clamping would.
 */
export function embedding(ctx: GpuContext, table: Weight, ids: Binding, out: Binding, tokens: number): void {
  const kernel = { name: `embedding_${table.dtype}`, code, constants: { DTYPE: DTYPE_CODE[table.dtype] } };
  const cols = table.cols;
  const [gx, gy] = ctx.grid(Math.ceil((tokens * cols) / 256));
  table.chunks.forEach((chunk, i) => {
    const u = new Uint32Array([
      tokens,
      cols,
      chunk.rowStart,
      chunk.rows,
      table.rows,
      i === 0 ? 1 : 0,
      gx * 256,
      weightRowBytes(table.dtype, cols) / 4,
      scaleStride(cols),
      0,
      0,
      0,
    ]);
    ctx.dispatch(kernel, [ids, chunk.buffer, out, table.scales ?? dummyBinding(ctx)], [gx, gy], u);
  });
}
