// A black-box Matrix client for the interop tests: matrix-js-sdk with its Rust crypto,
// in "only signed devices" isolation mode (what Element does, MSC4153).
//
// Protocol: one JSON command per line on stdin, one JSON answer per line on stdout
// ({"ok": true, ...} or {"ok": false, "error": "..."}). Everything the SDK logs goes to
// stderr so stdout stays a clean channel.

if (!Promise.withResolvers) {
    // matrix-js-sdk 43 targets Node >= 22; this is the only missing piece on Node 20.
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

const out = process.stdout;
for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
    const original = console.error.bind(console);
    console[level] = (...args) => original(`[js ${level}]`, ...args);
}

const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { decodeRecoveryKey } = await import("matrix-js-sdk/lib/crypto-api/recovery-key.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel(process.env.INTEROP_JS_LOG || "warn");

const state = {
    client: null,
    userId: null,
    password: null,
    recoveryKey: null,
    secretStorageKey: null, // { keyId?, privateKey }
    events: new Map(), // event_id -> MatrixEvent, in arrival order
};

function reply(obj) {
    out.write(JSON.stringify(obj) + "\n");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(check, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(100);
    }
}

function passwordAuth(session) {
    const auth = {
        type: "m.login.password",
        identifier: { type: "m.id.user", user: state.userId },
        password: state.password,
    };
    if (session) auth.session = session;
    return auth;
}

async function uiaRequest(makeRequest) {
    try {
        await makeRequest(null);
    } catch (err) {
        const session = err?.data?.session;
        if (err?.httpStatus !== 401 || !err?.data?.flows) throw err;
        await makeRequest(passwordAuth(session));
    }
}

const commands = {
    // cross_signing: create our own identity; secret_storage: also create secret storage and a
    // recovery key; recovery_key: instead, unlock the account's existing secret storage with it
    // and sign this device with the identity found there (Element's "verify with recovery key").
    async login({
        base_url,
        user_id,
        password,
        cross_signing = true,
        secret_storage = false,
        recovery_key = null,
    }) {
        state.userId = user_id;
        state.password = password;
        const bare = sdk.createClient({ baseUrl: base_url });
        const res = await bare.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: user_id },
            password,
            initial_device_display_name: "interop js client",
        });
        const client = sdk.createClient({
            baseUrl: base_url,
            userId: res.user_id,
            accessToken: res.access_token,
            deviceId: res.device_id,
            cryptoCallbacks: {
                getSecretStorageKey: async ({ keys }) => {
                    if (!state.secretStorageKey) return null;
                    const keyId = Object.keys(keys)[0];
                    return [keyId, state.secretStorageKey.privateKey];
                },
            },
        });
        state.client = client;
        await client.initRustCrypto({ useIndexedDB: false });
        const crypto = client.getCrypto();
        crypto.setDeviceIsolationMode(new cryptoApi.OnlySignedDevicesIsolationMode());

        const record = (ev) => {
            if (ev.getId()) state.events.set(ev.getId(), ev);
        };
        client.on(sdk.RoomEvent.Timeline, (ev) => record(ev));
        client.on(sdk.MatrixEventEvent.Decrypted, (ev) => record(ev));
        client.on(sdk.RoomMemberEvent.Membership, (_ev, member) => {
            if (member.membership === "invite" && member.userId === client.getUserId()) {
                client.joinRoom(member.roomId).catch((e) => console.error("auto-join failed", e));
            }
        });

        const prepared = new Promise((resolve) => {
            const onSync = (syncState) => {
                if (syncState === "PREPARED" || syncState === "SYNCING") {
                    client.removeListener(sdk.ClientEvent.Sync, onSync);
                    resolve();
                }
            };
            client.on(sdk.ClientEvent.Sync, onSync);
        });
        await client.startClient({ initialSyncLimit: 20 });
        await prepared;

        if (recovery_key) {
            state.secretStorageKey = { privateKey: decodeRecoveryKey(recovery_key) };
            // The import needs our own public identity first (Element waits for it too).
            await until(() => crypto.userHasCrossSigningKeys(res.user_id, true), 30000, "own identity");
            await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaRequest });
        } else if (cross_signing) {
            await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: uiaRequest });
        }
        if (secret_storage) {
            const generated = await crypto.createRecoveryKeyFromPassphrase();
            state.secretStorageKey = generated;
            state.recoveryKey = generated.encodedPrivateKey;
            await crypto.bootstrapSecretStorage({
                createSecretStorageKey: async () => generated,
                setupNewSecretStorage: true,
            });
        }
        const status = await crypto.getCrossSigningStatus();
        let own = null;
        if (cross_signing || recovery_key) {
            // our signature on this device shows up after the next /keys/query of our own user
            own = await until(
                async () => {
                    await crypto.getUserDeviceInfo([res.user_id], true);
                    const st = await crypto.getDeviceVerificationStatus(res.user_id, res.device_id);
                    return st?.signedByOwner ? st : null;
                },
                15000,
                "our own device to show as signed",
            ).catch(() => null);
        }
        return {
            master_key: await crypto.getCrossSigningKeyId(),
            own_device_signed: own?.signedByOwner ?? false,
            user_id: res.user_id,
            device_id: res.device_id,
            cross_signing_ready: await crypto.isCrossSigningReady(),
            private_keys_in_secret_storage: status.privateKeysInSecretStorage,
            recovery_key: state.recoveryKey,
        };
    },

    // A new identity for the account, as "reset cryptographic identity" in Element does.
    async reset_identity() {
        const crypto = state.client.getCrypto();
        await crypto.bootstrapCrossSigning({
            setupNewCrossSigning: true,
            authUploadDeviceSigningKeys: uiaRequest,
        });
        return { master_key: await crypto.getCrossSigningKeyId() };
    },

    async recovery_key() {
        return { recovery_key: state.recoveryKey };
    },

    async create_dm({ user }) {
        const client = state.client;
        const { room_id } = await client.createRoom({
            is_direct: true,
            preset: "trusted_private_chat",
            invite: [user],
            initial_state: [
                {
                    type: "m.room.encryption",
                    state_key: "",
                    content: { algorithm: "m.megolm.v1.aes-sha2" },
                },
            ],
        });
        await until(() => client.getRoom(room_id), 30000, "the new room in sync");
        return { room_id };
    },

    async join({ room }) {
        await state.client.joinRoom(room);
        await until(() => state.client.getRoom(room)?.getMyMembership() === "join", 30000, "join");
        return {};
    },

    async wait_joined({ room, user, timeout = 30 }) {
        await until(
            () => state.client.getRoom(room)?.getMember(user)?.membership === "join",
            timeout * 1000,
            `${user} to join`,
        );
        return {};
    },

    async send({ room, text }) {
        const res = await state.client.sendEvent(room, "m.room.message", {
            msgtype: "m.text",
            body: text,
        });
        return { event_id: res.event_id };
    },

    async device_status({ user, device }) {
        const crypto = state.client.getCrypto();
        await crypto.getUserDeviceInfo([user], true);
        const status = await crypto.getDeviceVerificationStatus(user, device);
        return {
            known: status !== null,
            signed_by_owner: status?.signedByOwner ?? false,
            cross_signing_verified: status?.crossSigningVerified ?? false,
        };
    },

    // Waits for a message in `room` from `sender` (optionally with `body`) and reports whether it
    // decrypted and which warning the client would show. Transient states (keys not arrived yet)
    // are waited out until `timeout`; then the last state is reported with timed_out: true.
    async wait_message({ room, sender, body = null, timeout = 30 }) {
        const crypto = state.client.getCrypto();
        const deadline = Date.now() + timeout * 1000;
        let last = null;
        for (;;) {
            for (const ev of state.events.values()) {
                if (ev.getRoomId() !== room || ev.getSender() !== sender) continue;
                if (!ev.isEncrypted() && ev.getType() !== "m.room.message") continue;
                if (ev.isBeingDecrypted() || ev.isDecryptionFailure()) {
                    const failure = ev.decryptionFailureReason ?? "PENDING";
                    last = { decrypted: false, failure, event_id: ev.getId() };
                    const transient =
                        failure === "PENDING" ||
                        failure === cryptoApi.DecryptionFailureCode.MEGOLM_UNKNOWN_INBOUND_SESSION_ID;
                    if (!transient && body === null) return last;
                    continue;
                }
                if (ev.getType() !== "m.room.message") continue;
                const content = ev.getContent();
                if (body !== null && content.body !== body) continue;
                const info = ev.isEncrypted() ? await crypto.getEncryptionInfoForEvent(ev) : null;
                const deviceId = ev.getWireContent().device_id ?? null;
                let senderDeviceSigned = null;
                if (deviceId) {
                    const st = await crypto.getDeviceVerificationStatus(sender, deviceId);
                    senderDeviceSigned = st?.signedByOwner ?? false;
                }
                return {
                    decrypted: true,
                    encrypted: ev.isEncrypted(),
                    body: content.body,
                    msgtype: content.msgtype,
                    event_id: ev.getId(),
                    sender_device: deviceId,
                    sender_device_signed: senderDeviceSigned,
                    shield_colour: info ? cryptoApi.EventShieldColour[info.shieldColour] : null,
                    shield_reason:
                        info && info.shieldReason !== null
                            ? cryptoApi.EventShieldReason[info.shieldReason]
                            : null,
                };
            }
            if (Date.now() > deadline) {
                return { ...(last ?? { decrypted: false, failure: "NO_EVENT" }), timed_out: true };
            }
            await sleep(100);
        }
    },

    async quit() {
        if (state.client) state.client.stopClient();
        setTimeout(() => process.exit(0), 50);
        return {};
    },
};

let queue = Promise.resolve();
let buffer = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
    buffer += chunk;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        queue = queue.then(async () => {
            let msg;
            try {
                msg = JSON.parse(line);
                const handler = commands[msg.cmd];
                if (!handler) throw new Error(`unknown command ${msg.cmd}`);
                const result = await handler(msg);
                reply({ ok: true, cmd: msg.cmd, ...result });
            } catch (err) {
                reply({ ok: false, cmd: msg?.cmd ?? null, error: String(err?.stack ?? err) });
            }
        });
    }
});
process.stdin.on("end", () => {
    queue.then(() => {
        if (state.client) state.client.stopClient();
        process.exit(0);
    });
});
reply({ ok: true, cmd: "hello", node: process.version });
