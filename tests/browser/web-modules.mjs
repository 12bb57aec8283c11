// Loads the web client's ES modules (sfu/web/) into Node. Node treats .js
// outside a "type": "module" package as CommonJS, so the modules are copied
// into a temporary directory that is one.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The repository root. */
export const root = fileURLToPath(new URL("../../", import.meta.url));

const dir = mkdtempSync(join(tmpdir(), "sfu-web-"));
cpSync(join(root, "sfu/web"), dir, { recursive: true });
writeFileSync(join(dir, "package.json"), '{"type": "module"}\n');
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** Imports `sfu/web/{path}`. */
export function webModule(path) {
  return import(pathToFileURL(join(dir, path)).href);
}
