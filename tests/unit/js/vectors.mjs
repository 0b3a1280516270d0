// docs/test-vectors/ as the JavaScript tests read them.
import { readFileSync } from "node:fs";

const root = new URL("../../../docs/test-vectors/", import.meta.url);

export function vector(name) {
  return JSON.parse(readFileSync(new URL(`${name}.json`, root), "utf-8"));
}
