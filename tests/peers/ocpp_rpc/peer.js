#!/usr/bin/env node
// A second, independent CSMS for the tests: ocpp-rpc (a Node library, AJV over its own copy of
// the OCA JSON schemas) in strict mode. It validates every CALL the agent sends, every answer
// the agent gives to our CALLs and every CALL we send, so a frame that only the Python `ocpp`
// library would accept cannot go unnoticed. It decides nothing itself: the Python test
// (tests/peers/ocpp_rpc_csms.py) answers the agent's CALLs and the handshake, and commands our
// CALLs, over JSON lines on stdin/stdout. One line out per event, one line in per command:
//
//   out {"event": "listening", "port": N}
//   out {"event": "connect" | "disconnect" | "frame" | "violation" | "bad_message", ...}
//   out {"ask": N, "kind": "auth" | "call", ...}        in {"answer": N, ...}
//   in  {"cmd": "call" | "send_raw" | "disconnect" | "stop", "id": N, ...}
//   out {"reply": N, "result": ...} or {"reply": N, "error": {code, description, details}}
//
// Usage: node peer.js ocpp1.6[,ocpp2.0.1] [port] [tls]   (the subprotocols offered, all strict)
// tls, for security profiles 2 and 3: JSON {"cert", "key", "ca", "client"} (PEM file paths;
// client "none", "optional" or "required", as ssl.CERT_NONE/OPTIONAL/REQUIRED on the Python CSMS:
// a client certificate that does not verify against `ca` ends the connection either way).
'use strict';

const readline = require('readline');
const { RPCServer, createRPCError } = require('ocpp-rpc');

const protocols = (process.argv[2] || 'ocpp1.6').split(',');
const tls = process.argv[4] ? JSON.parse(process.argv[4]) : null;
const clients = new Map(); // identity -> the connected RPCServerClient
const asked = new Map(); // ask number -> resolve(answer line)
const refused = new WeakSet(); // errors the strict validator raised (not the agent's CALLERRORs)
let asks = 0;

function emit(message) {
    process.stdout.write(JSON.stringify(message) + '\n');
}

// Ask the Python side and wait for its answer (a handshake decision, the answer to a CALL).
function ask(kind, fields) {
    const number = ++asks;
    return new Promise(resolve => {
        asked.set(number, resolve);
        emit({ ask: number, kind, ...fields });
    });
}

// rpc: a CALLERROR (the agent's, or our validator's when `strict`); otherwise a timeout or a
// closed connection.
function errorOf(err) {
    return {
        code: err.rpcErrorCode || err.constructor.name,
        description: err.message || '',
        details: err.details || {},
        rpc: Boolean(err.rpcErrorCode),
        strict: refused.has(err),
    };
}

const server = new RPCServer({
    protocols,
    strictMode: protocols, // every offered subprotocol validated both ways
    callTimeoutMs: 30000,
    pingIntervalMs: 0, // the agent pings if configured to; our pings would only add noise
});

server.auth(async (accept, reject, handshake) => {
    const password = handshake.password ? handshake.password.toString('base64') : null;
    // The client certificate of this connection (TLS only), reported with its `connect`.
    const socket = handshake.request.socket;
    const cert = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : null;
    handshake.peerCert = cert && cert.raw ? cert.raw.toString('base64') : null;
    const answer = await ask('auth', {
        identity: handshake.identity,
        password,
        headers: handshake.headers,
    });
    if (answer.accept) accept();
    else reject(401, 'Unauthorized');
});

server.on('client', client => {
    const identity = client.identity;
    clients.set(identity, client);
    emit({ event: 'connect', identity, protocol: client.protocol, cert: client.handshake.peerCert });

    client.on('message', ({ message, outbound }) => {
        emit({ event: 'frame', identity, direction: outbound ? 'out' : 'in', text: String(message) });
    });
    // The whole point of this peer: whatever its validator refuses, in either direction.
    client.on('strictValidationFailure', ({ method, outbound, isCall, error }) => {
        refused.add(error);
        emit({ event: 'violation', identity, action: method, outbound, is_call: isCall, error: error.message });
    });
    client.on('badMessage', ({ buffer, error }) => {
        emit({ event: 'bad_message', identity, text: String(buffer), error: error.message });
    });
    client.on('close', ({ code, reason }) => {
        if (clients.get(identity) === client) clients.delete(identity);
        emit({ event: 'disconnect', identity, code, reason: String(reason || '') });
    });

    // Every CALL from the agent (after strict validation) is answered by the Python side.
    client.handle(async ({ method, params }) => {
        const answer = await ask('call', { identity, action: method, payload: params });
        if (answer.error) throw createRPCError(answer.error.code, answer.error.description);
        return answer.result;
    });
});

async function run(command) {
    const client = clients.get(command.identity);
    if (command.cmd === 'stop') {
        await server.close({ force: true });
        if (httpsServer) httpsServer.close();
        return null;
    }
    if (!client) throw new Error(`${command.identity} is not connected`);
    if (command.cmd === 'call') {
        return await client.call(command.action, command.payload, { callTimeoutMs: command.timeout_ms });
    }
    if (command.cmd === 'send_raw') return client.sendRaw(command.text), null;
    if (command.cmd === 'disconnect') return await client.close({ code: 1000 }), null;
    throw new Error(`unknown command ${command.cmd}`);
}

readline.createInterface({ input: process.stdin }).on('line', line => {
    const message = JSON.parse(line);
    if (message.answer !== undefined) {
        const resolve = asked.get(message.answer);
        asked.delete(message.answer);
        if (resolve) resolve(message);
        return;
    }
    run(message).then(
        result => emit({ reply: message.id, result: result ?? null }),
        err => emit({ reply: message.id, error: errorOf(err) }),
    ).then(() => {
        if (message.cmd === 'stop') process.exit(0);
    });
}).on('close', () => process.exit(0)); // the test process went away

let httpsServer = null; // ours when serving TLS (ocpp-rpc's listen() serves plain HTTP only)

// wss:// with the given certificate; client certificates checked as `tls.client` says.
function listenTls(port) {
    const fs = require('fs');
    const options = { cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) };
    if (tls.client && tls.client !== 'none') {
        Object.assign(options, { ca: fs.readFileSync(tls.ca), requestCert: true, rejectUnauthorized: false });
    }
    httpsServer = require('https').createServer(options, (req, res) => {
        res.statusCode = 404;
        res.end();
    });
    httpsServer.on('secureConnection', socket => {
        // Optional: none is fine, one that does not verify is not; required: one that verifies.
        const presented = options.requestCert && Boolean(socket.getPeerCertificate().raw);
        if (options.requestCert && !socket.authorized && (presented || tls.client === 'required')) {
            socket.destroy();
        }
    });
    httpsServer.on('upgrade', server.handleUpgrade);
    return new Promise((resolve, reject) => {
        httpsServer.once('error', reject);
        httpsServer.listen(port, '127.0.0.1', () => resolve(httpsServer));
    });
}

const port = Number(process.argv[3] || 0);
(tls ? listenTls(port) : server.listen(port, '127.0.0.1')).then(http =>
    emit({ event: 'listening', port: http.address().port }),
);
