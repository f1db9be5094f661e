// Lets Node load the SDK outside a component: eddy's host imports
// (`eddy:plugin/...`) resolve to a module of no-op functions.
// Used as `node --import ./host-stub.mjs --test`.
import { register } from "node:module";

const hooks = `
export async function resolve(specifier, context, next) {
  if (specifier.startsWith("eddy:plugin/")) return { url: "data:text/javascript,export const log = () => {}; export const counterAdd = () => {}; export const gaugeSet = () => {}; export const get = () => undefined; export const set = () => {}; export const setIfAbsent = () => true; export { del as delete }; const del = () => {};", shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, import.meta.url);
