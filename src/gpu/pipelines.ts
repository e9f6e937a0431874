/**
 * Pipeline cache: a kernel's final WGSL text plus its override constants → one compiled compute pipeline.
 * Compiling a pipeline costs milliseconds to seconds; the forward pass dispatches hundreds per token, so every
 * pipeline is compiled once and looked up afterwards. Step-varying values never go into the shader text.
 */

/** A compute kernel: WGSL source (after any text specialisation) and override constants. */
export interface KernelSource {
  /** Short name used in labels and error messages, e.g. "matvec_bf16". */
  name: string;
  /** Complete WGSL source. */
  code: string;
  /** Entry point (default "main"). */
  entryPoint?: string;
  /** Values for the shader's `override` declarations. */
  constants?: Record<string, number>;
}

/** Compiles compute pipelines once and hands out the cached ones. */
export class PipelineCache {
  readonly #device: GPUDevice;
  readonly #pipelines = new Map<string, GPUComputePipeline>();
  readonly #modules = new Map<string, GPUShaderModule>();

  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** Number of distinct pipelines compiled so far. */
  get size(): number {
    return this.#pipelines.size;
  }

  /** The pipeline for `kernel`, compiled on first use. Compile errors throw with the WGSL diagnostics. */
  get(kernel: KernelSource): GPUComputePipeline {
    const entryPoint = kernel.entryPoint ?? "main";
    const constants = kernel.constants ?? {};
    const constKey = Object.keys(constants).sort().map((k) => `${k}=${constants[k]}`).join(",");
    const key = `${entryPoint}|${constKey}|${kernel.code}`;
    const cached = this.#pipelines.get(key);
    if (cached) return cached;

    let module = this.#modules.get(kernel.code);
    if (!module) {
      module = this.#device.createShaderModule({ code: kernel.code, label: kernel.name });
      this.#modules.set(kernel.code, module);
    }
    this.#device.pushErrorScope("validation");
    const pipeline = this.#device.createComputePipeline({
      label: kernel.name,
      layout: "auto",
      compute: { module, entryPoint, constants },
    });
    // Surface compile errors synchronously-ish: the scope resolves later; we attach a handler that logs,
    // and callers that need certainty use `compileChecked`.
    this.#device.popErrorScope().then((err) => {
      if (err) console.error(`WGSL pipeline "${kernel.name}" failed: ${err.message}`);
    });
    this.#pipelines.set(key, pipeline);
    return pipeline;
  }

  /** Compiles `kernel` and waits for the validation result; throws with the WGSL diagnostics on failure. */
  async compileChecked(kernel: KernelSource): Promise<GPUComputePipeline> {
    this.#device.pushErrorScope("validation");
    const pipeline = this.get(kernel);
    const err = await this.#device.popErrorScope();
    if (err) throw new Error(`WGSL kernel "${kernel.name}" failed to compile: ${err.message}`);
    return pipeline;
  }
}
