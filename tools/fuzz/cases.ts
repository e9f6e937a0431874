/**
 * Cases: a base model directory read into memory, and case K of a seeded run — which base, which mutations
 * (one to three, drawn from the catalogue), and the mutated files. Pure given (seed, K, bases): the same
 * seed gives the same cases, and any case can be rebuilt alone.
 */
import { basename } from "node:path";
import { type BaseModel, type Mutation, MUTATION_KINDS, type MutationContext } from "./mutations.ts";
import { Rng } from "./rng.ts";

/** Reads the regular files of a model directory (not subdirectories) into memory. */
export async function readBaseModel(dir: string): Promise<BaseModel> {
  const files = new Map<string, Uint8Array>();
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  names.sort();
  for (const name of names) {
    // Only what a loader might read: skip logs and notes that only slow copying down.
    if (!/\.(json|safetensors)$/.test(name) || name === "accuracy.json") continue;
    files.set(name, await Deno.readFile(`${dir}/${name}`));
  }
  return { name: basename(dir.replace(/[/\\]+$/, "")), files };
}

/** A case: its base, the mutations applied, and the files to load. */
export interface FuzzCase {
  index: number;
  base: string;
  mutations: Mutation[];
  files: Map<string, Uint8Array>;
}

/** How many mutations a case stacks: mostly one, sometimes two or three. */
const STACK = [1, 2, 3];
const STACK_WEIGHTS = [0.6, 0.28, 0.12];

/** Case `index` of a run seeded `seed` over `bases` (the first base is drawn most often). */
export function makeCase(seed: string | number, index: number, bases: readonly BaseModel[]): FuzzCase {
  const rng = Rng.forCase(seed, index);
  const base = bases.length === 1 ? bases[0] : rng.weighted(bases, bases.map((_, i) => (i === 0 ? 3 : 1)));
  const files = new Map<string, Uint8Array>();
  for (const [name, bytes] of base.files) files.set(name, bytes);
  const c: MutationContext = { rng, files, base, bases };
  const wanted = rng.weighted(STACK, STACK_WEIGHTS);
  const weights = MUTATION_KINDS.map((k) => k.weight);
  const mutations: Mutation[] = [];
  for (let tries = 0; mutations.length < wanted && tries < 50; tries++) {
    const kind = rng.weighted(MUTATION_KINDS, weights);
    const done = kind.apply(c);
    if (done) mutations.push({ kind: kind.kind, ...done });
  }
  return { index, base: base.name, mutations, files };
}
