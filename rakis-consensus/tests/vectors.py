#!/usr/bin/env python3
"""Independent computation of the rakis-consensus test vectors (tests/vectors.rs).

Reimplements the byte layouts of the specification in rakis-consensus/src/lib.rs with
hashlib only; nothing here calls the Rust code. Run: python3 tests/vectors.py
"""
import hashlib

def sha(b): return hashlib.sha256(b).digest()
def u32(v): return v.to_bytes(4, "big")

def canonical(dim, word_list):
    out = b"".join(w.to_bytes(8, "little") for w in word_list)
    return out[: (dim + 7) // 8]

def commitment(req, node, inf, output, dim, word_list, salt):
    return sha(b"rakis/commit/v1\x00" + req + node + inf + sha(output.encode()) + u32(dim)
               + canonical(dim, word_list) + salt)

def joint(req, commits):
    return sha(b"rakis/accepted/v1\x00" + req + u32(len(commits)) + b"".join(commits))

def select(req, pairs):
    seed = sha(b"rakis/select/v1\x00" + req + u32(len(pairs)) + b"".join(c + s for c, s in pairs))
    r = int.from_bytes(seed[:8], "big")
    return seed, (r * len(pairs)) >> 64

def payees(nodes):  # distinct node ids, ascending
    return sha(b"".join(sorted(set(nodes))))

def result(req, out_hash, j, pay, config=bytes(32)):
    return sha(b"rakis/result/v2\x00" + req + out_hash + j + pay + config)

def network(name): return sha(b"rakis/network/v1\x00" + name.encode())

def commit_statement(net, req, node, inf, com):
    return sha(b"rakis/commit-statement/v1\x00" + net + req + node + inf + com)

def reveal_statement(net, req, node, inf, output, dim, word_list, salt):
    return sha(b"rakis/reveal-statement/v1\x00" + net + req + node + inf + sha(output.encode())
               + u32(dim) + canonical(dim, word_list) + salt)

def popcount(x): return bin(x).count("1")

def bits(lo, hi):  # bits lo..=hi set in a 64-bit word
    return sum(1 << i for i in range(lo, hi + 1))

print("== primitive vectors ==")
R = bytes([0x11]) * 32
C1, C2, C3 = bytes([0x01]) * 32, bytes([0x02]) * 32, bytes([0xFE]) * 32
S1, S2, S3 = bytes([0xA1]) * 32, bytes([0xA2]) * 32, bytes([0xA3]) * 32
print("joint([])          ", joint(R, []).hex())
print("joint([c1])        ", joint(R, [C1]).hex())
print("joint([c1,c2,c3])  ", joint(R, [C1, C2, C3]).hex())
for name, pairs in [("1", [(C1, S1)]), ("3", [(C1, S1), (C2, S2), (C3, S3)])]:
    seed, idx = select(R, pairs)
    print(f"select({name}) seed {seed.hex()} u64 {int.from_bytes(seed[:8],'big')} idx {idx}")
# a list long enough that the index is not trivially 0
pairs = [(bytes([i]) * 32, bytes([0x80 + i]) * 32) for i in range(1, 8)]
seed, idx = select(R, pairs)
print(f"select(7) seed {seed.hex()} idx {idx}")
OH = sha(b"Paris")
print("output_hash(Paris) ", OH.hex())
PAY = payees([bytes([0x03]) * 33, bytes([0x02]) * 33, bytes([0x03]) * 33])
print("payees(2,3)        ", PAY.hex())
print("result             ", result(R, OH, joint(R, [C1, C2, C3]), PAY, bytes([0x22]) * 32).hex())
# commitment with a 130-bit embedding (crosses a word boundary; bits 0, 63, 64, 129)
print("commit130          ", commitment(R, bytes([0x02]) * 33, bytes([0x03]) * 32, "héllo",
                                        130, [1 | 1 << 63, 1, 1 << 1], bytes([0x04]) * 32).hex())
NET = network("rakis-testnet")
print("network(testnet)   ", NET.hex())
print("commit statement   ", commit_statement(NET, R, bytes([0x02]) * 33, bytes([0x03]) * 32, C1).hex())
print("reveal statement   ", reveal_statement(NET, R, bytes([0x02]) * 33, bytes([0x03]) * 32, "héllo",
                                              130, [1 | 1 << 63, 1, 1 << 1], bytes([0x04]) * 32).hex())

print("\n== scenarios (64-bit embeddings, radius floor(0.30*64) = 19) ==")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
A, B, C, D, E = 0, bits(0, 9), bits(10, 28), bits(44, 63), bits(20, 43)
NAMES = {A: "A", B: "B", C: "C", D: "D", E: "E"}

def node(n): return bytes([n]) * 33
def inf(n): return bytes([0x30 + n]) * 32
def out(n): return f"answer {n}"

def run(title, req, embs, salts, radius, threshold, dims=None):
    """embs: node -> word list; returns the evaluate() result of the spec on all-verified input."""
    dims = dims or {n: 64 for n in embs}
    com = {n: commitment(req, node(n), inf(n), out(n), dims[n], embs[n], salts[n]) for n in embs}
    order = sorted(embs, key=lambda n: com[n])
    dist = lambda a, b: sum(popcount(x ^ y) for x, y in zip(embs[a], embs[b]))
    counts = {n: sum(1 for m in order if dist(n, m) <= radius) for n in order}
    best = max(counts.values())
    center = next(n for n in order if counts[n] == best)
    members = [m for m in order if dist(center, m) <= radius]
    print(f"-- {title}")
    for n in sorted(embs):
        print(f"   node {n} salt {salts[n][0]:#04x} commitment {com[n].hex()} count {counts[n]}")
    print("   commitment order:", order, " counts in that order:", [counts[n] for n in order])
    print("   center", center, "best", best, "threshold", threshold, "members", members,
          "distances", [dist(center, m) for m in members])
    if best >= threshold:
        j = joint(req, [com[m] for m in members])
        seed, idx = select(req, [(com[m], salts[m]) for m in members])
        sel = members[idx]
        print("   joint ", j.hex())
        print("   seed  ", seed.hex(), "index", idx, "selected node", sel)
        print("   digest", result(req, sha(out(sel).encode()), j, payees([node(m) for m in members])).hex())
    return com, order, center

REQ = bytes([0xAA]) * 32
main_embs = {1: [A], 2: [B], 3: [C], 4: [D], 5: [D]}
main_salts = {n: bytes([0x50 + n]) * 32 for n in main_embs}
run("main: A B C D D, default frame, threshold ceil(0.6*5)=3", REQ, main_embs, main_salts, 19, 3)

# Two identical colluders (nodes 3, 4 with D) form the tightest ball; A's ball {A, B} ties at 2.
TREQ = bytes([0xCC]) * 32
tie_embs = {1: [A], 2: [B], 3: [D], 4: [D], 5: [E]}
def tie_salts(s1, s2):
    s = {n: bytes([0x60 + n]) * 32 for n in tie_embs}
    s[1], s[2] = bytes([s1]) * 32, bytes([s2]) * 32
    return s
def lowest(s):
    com = {n: commitment(TREQ, node(n), inf(n), out(n), 64, tie_embs[n], s[n]) for n in tie_embs}
    return min((1, 2, 3, 4), key=lambda n: com[n])
honest = next((a, b) for a in range(256) for b in range(256) if lowest(tie_salts(a, b)) == 2)
colluder = next((a, b) for a in range(256) for b in range(256) if lowest(tie_salts(a, b)) in (3, 4))
print("tie salts honest-wins", honest, "colluder-wins", colluder)
run("tie, honest lowest: sec_percentage 0.4, threshold ceil(0.4*5)=2", TREQ, tie_embs,
    tie_salts(*honest), 19, 2)
run("tie, colluder lowest", TREQ, tie_embs, tie_salts(*colluder), 19, 2)

# Main scenario, but node 5 committed and revealed a 128-bit embedding (words [D, 0]).
dim_embs = dict(main_embs); dim_embs[5] = [D, 0]
dims = {1: 64, 2: 64, 3: 64, 4: 64, 5: 128}
def dsalts(s5):
    s = dict(main_salts); s[5] = bytes([s5]) * 32; return s
def dcom(s5): return {n: commitment(REQ, node(n), inf(n), out(n), dims[n], dim_embs[n], dsalts(s5)[n]) for n in dim_embs}
not_first = next(s for s in range(256) if min(dcom(s), key=lambda n: dcom(s)[n]) != 5)
first = next(s for s in range(256) if min(dcom(s), key=lambda n: dcom(s)[n]) == 5)
for s in (not_first, first):
    c = dcom(s)
    print(f"-- dim scenario node5 salt {s:#04x}: order {sorted(c, key=lambda n: c[n])} node5 commitment {c[5].hex()}")
