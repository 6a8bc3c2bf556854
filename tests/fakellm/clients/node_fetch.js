// Node's built-in fetch (undici; OpenSSL linked statically into the node binary) against the
// fake server: an Anthropic streaming call, read chunk by chunk and parsed as SSE, then an
// OpenAI chat call (non-streaming).  Prints {"calls": [...]} like the Python clients.
//
// Run: FAKELLM_URL=https://127.0.0.1:PORT NODE_EXTRA_CA_CERTS=ca.pem node node_fetch.js
// (NODE_EXTRA_CA_CERTS is read at process start, so it must be in the environment; the
// optional FAKELLM_SCENARIO picks a server scenario.)
'use strict';

// fakellm.client_env() passes the same fake keys the Python clients use; the fallbacks only
// matter when the script is run by hand.
const FAKE_ANTHROPIC_KEY =
  process.env.FAKELLM_ANTHROPIC_KEY || 'sk-ant-api03-' + 'N0deFetchTestKey'.repeat(5) + 'abcdefghijklmAA';
const FAKE_OPENAI_KEY = process.env.FAKELLM_OPENAI_KEY || 'sk-proj-' + 'N0deFetchTestKey'.repeat(2) + '12345678';

const base = (process.env.FAKELLM_URL || '').replace(/\/$/, '');
const scenario = process.env.FAKELLM_SCENARIO;
const extra = scenario ? { 'x-fake-scenario': scenario } : {};

// Parse an SSE byte stream incrementally: TextDecoder with {stream: true} keeps multibyte
// characters that the server split across chunks intact.
async function* sseEvents(body) {
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      let event = null;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) yield { event, data: data.join('\n') };
    }
  }
}

async function anthropicStream() {
  const response = await fetch(`${base}/v1/messages`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'anthropic-version': '2023-06-01',
      'x-api-key': FAKE_ANTHROPIC_KEY,
      ...extra,
    },
    body: JSON.stringify({
      model: 'claude-sonnet-4-6',
      max_tokens: 1024,
      stream: true,
      messages: [{ role: 'user', content: 'List the files.' }],
      tools: [{ name: 'bash', input_schema: { type: 'object' } }],
    }),
  });
  if (!response.ok) throw new Error(`anthropic status ${response.status}`);
  const result = { api: 'messages', stream: true, text: '', tool_calls: [], chunks: 0 };
  const blocks = new Map();
  for await (const { event, data } of sseEvents(response.body)) {
    result.chunks += 1;
    const payload = JSON.parse(data);
    if (payload.type !== event) throw new Error(`event line ${event} != type ${payload.type}`);
    if (event === 'message_start') {
      result.id = payload.message.id;
      result.model = payload.message.model;
      result.input_tokens = payload.message.usage.input_tokens;
    } else if (event === 'content_block_start') {
      blocks.set(payload.index, { ...payload.content_block, json: '' });
    } else if (event === 'content_block_delta') {
      const block = blocks.get(payload.index);
      if (payload.delta.type === 'text_delta') result.text += payload.delta.text;
      else if (payload.delta.type === 'input_json_delta') block.json += payload.delta.partial_json;
    } else if (event === 'message_delta') {
      result.finish_reason = payload.delta.stop_reason;
      result.output_tokens = payload.usage.output_tokens;
    }
  }
  for (const [, block] of [...blocks].sort((a, b) => a[0] - b[0])) {
    if (block.type === 'tool_use') {
      result.tool_calls.push({ id: block.id, name: block.name, arguments: JSON.parse(block.json) });
    }
  }
  return result;
}

async function openaiChat() {
  const response = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${FAKE_OPENAI_KEY}`, ...extra },
    body: JSON.stringify({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'List the files.' }] }),
  });
  if (!response.ok) throw new Error(`openai status ${response.status}`);
  const body = await response.json();
  const choice = body.choices[0];
  return {
    api: 'chat',
    stream: false,
    id: body.id,
    model: body.model,
    text: choice.message.content || '',
    tool_calls: (choice.message.tool_calls || []).map((tc) => ({
      id: tc.id,
      name: tc.function.name,
      arguments: JSON.parse(tc.function.arguments),
    })),
    input_tokens: body.usage.prompt_tokens,
    output_tokens: body.usage.completion_tokens,
    finish_reason: choice.finish_reason,
  };
}

async function main() {
  if (!base) throw new Error('FAKELLM_URL is not set');
  const calls = [await anthropicStream(), await openaiChat()];
  process.stdout.write(JSON.stringify({ calls }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
