/**
 * Shapes and parameters shared by the GPU ops and their CPU references in src/ref/ (which import them from
 * here: the production path never imports src/ref/).
 */

/** Head counts and head size of one attention layer. */
export interface AttentionShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/**
 * Sampling parameters (semantics in wgsl/sample.wgsl and its CPU reference, src/ref/sample.ts).
 * temperature ≤ 0 means greedy (argmax).
 */
export interface SampleParams {
  temperature: number;
  /** 0: off. */
  topK?: number;
  /** ≥ 1: off. */
  topP?: number;
  seed: number;
  step: number;
}
