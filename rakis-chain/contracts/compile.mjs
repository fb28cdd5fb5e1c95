// Compiles the Rakis contracts with solcjs (npm package `solc`, offline) and writes one artifact
// per contract: { contractName, compiler, abi, bytecode, deployedBytecode }.
//
//   node rakis-chain/contracts/compile.mjs <solc module dir> <output dir>
//
// With `--check`, compares against the files in <output dir> instead of writing them and exits 1
// when they differ (the artifact committed in the repository must equal a fresh compile).
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const check = args.includes("--check");
const [solcDir, outDir] = args.filter((a) => a !== "--check");
if (!solcDir || !outDir) {
  console.error("usage: compile.mjs <solc module dir> <output dir> [--check]");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const solc = require(resolve(solcDir));
const here = dirname(fileURLToPath(import.meta.url));
const files = ["RakisOracle.sol", "SampleConsumer.sol"];
const input = {
  language: "Solidity",
  sources: Object.fromEntries(files.map((f) => [f, { content: readFileSync(join(here, f), "utf8") }])),
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    viaIR: true,
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: (p) => {
  const f = join(here, p.replace(/^\.\//, ""));
  return existsSync(f) ? { contents: readFileSync(f, "utf8") } : { error: `not found: ${p}` };
} }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

let differ = false;
for (const [name, file] of [["RakisOracle", "RakisOracle.sol"], ["SampleConsumer", "SampleConsumer.sol"]]) {
  const c = output.contracts[file][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    abi: c.abi,
    bytecode: { object: "0x" + c.evm.bytecode.object },
    deployedBytecode: { object: "0x" + c.evm.deployedBytecode.object },
  };
  const text = JSON.stringify(artifact, null, 2) + "\n";
  const path = join(outDir, `${name}.json`);
  if (check) {
    const old = existsSync(path) ? readFileSync(path, "utf8") : "";
    if (old !== text) {
      console.error(`${path} differs from a fresh compile`);
      differ = true;
    }
  } else {
    writeFileSync(path, text);
    console.error(`wrote ${path}`);
  }
}
process.exit(differ ? 1 : 0);
