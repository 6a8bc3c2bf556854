// A stand-in for a Node agent that re-executes itself with new flags (as Gemini CLI and
// qwen-code do), then, as the relaunched agent, runs one housekeeping command and one tool.
// The relaunched process waits for the file named by AGENT_GO (if set) before it spawns them, so a
// tracer can attach to the running agent first.
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");

if (!process.env.AGENT_RELAUNCHED) {
  const child = spawnSync(process.execPath, ["--expose-gc", __filename, ...process.argv.slice(2)],
    { stdio: "inherit", env: { ...process.env, AGENT_RELAUNCHED: "1" } });
  process.exit(child.status ?? 1);
}
const go = process.env.AGENT_GO;
fs.writeFileSync(process.argv[2] + ".ready", String(process.pid));
const deadline = Date.now() + 60000;
while (go && !fs.existsSync(go) && Date.now() < deadline) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
}
spawnSync("git", ["rev-parse", "--show-toplevel"], { stdio: "ignore" });
spawnSync("sh", ["-c", `echo tool > ${process.argv[2]}`], { stdio: "inherit" });
