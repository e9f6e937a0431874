/**
 * A linear layer over `rows` activation rows: matvec (weights read once for up to MATVEC_MAX_BATCH rows —
 * decode) or tiled matmul (prefill). y[r, :] = W · x[r, :] (+ bias) (+ y when accumulating).
 */
import type { Binding, GpuContext } from "../gpu/context.ts";
import type { Weight } from "../gpu/weights.ts";
import { matmul } from "./matmul.ts";
import { matvec } from "./matvec.ts";

/** Rows up to which the matvec kernel (one weight read per call) beats the tiled matmul. */
export const MATVEC_MAX_BATCH = 8;

/** Options of {@link linear}. */
export interface LinearOptions {
  /** f32 [out_features] added to every row. */
  bias?: Binding;
  /** Add into y instead of overwriting it (residual connections). */
  accumulate?: boolean;
}

/** Records y [rows, w.rows] = x [rows, w.cols] · Wᵀ (+ bias) (+ y). */
export function linear(
  ctx: GpuContext,
  w: Weight,
  x: Binding,
  y: Binding,
  rows: number,
  options: LinearOptions = {},
): void {
  if (rows <= MATVEC_MAX_BATCH) matvec(ctx, w, x, y, { ...options, batch: rows });
  else matmul(ctx, w, x, y, rows, options);
}
