/** Policy factory: name + options → policy. */
import {
  type KvPolicy,
  type KvPolicyOptions,
  POLICY_NAMES,
  type PolicyName,
  validateKvOptions,
} from "../policy.ts";
import { fullPolicy } from "./full.ts";
import { h2oPolicy } from "./h2o.ts";
import { lethePolicy } from "./lethe.ts";
import { pyramidkvPolicy } from "./pyramidkv.ts";
import { rkvPolicy } from "./rkv.ts";
import { snapkvPolicy } from "./snapkv.ts";
import { streamingPolicy } from "./streaming.ts";

/** Creates a policy by name; unknown names and out-of-range options throw with the accepted values. */
export function createPolicy(name: string, options: KvPolicyOptions): KvPolicy {
  if (!(POLICY_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown KV policy "${name}"; choose one of: ${POLICY_NAMES.join(", ")}`);
  }
  if (name !== "full") validateKvOptions(options);
  switch (name as PolicyName) {
    case "full":
      return fullPolicy(options);
    case "streaming":
      return streamingPolicy(options);
    case "h2o":
      return h2oPolicy(options);
    case "snapkv":
      return snapkvPolicy(options);
    case "pyramidkv":
      return pyramidkvPolicy(options);
    case "lethe":
      return lethePolicy(options);
    case "rkv":
      return rkvPolicy(options);
  }
}
