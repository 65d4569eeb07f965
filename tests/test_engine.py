"""The continuous-batching engine: a stream's tokens are those of sample.generate whatever joins or
leaves the batch around it; stop, length and a full cache end streams; cancel frees and reuses
slots; force appends unsampled tokens exactly as if they had been in the prompt."""
import numpy as np
import pytest

from minigpt.config import PARAM_NAMES
from minigpt.inference import generate, kvcache
from minigpt.inference.engine import Engine
from minigpt.model import GPT, GPTConfig, backend

KERNELS = ["numpy"] + (["c"] if "c" in backend.available() else [])


def tiny_weights(V=70, maxT=40, seed=0):
    cfg = GPTConfig(block_size=maxT, vocab_size=V, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, backend="numpy", seed=seed)
    rng = np.random.default_rng(seed + 1)  # non-trivial LayerNorms and biases
    for name in PARAM_NAMES:
        model.params[name][...] += 0.1 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][V:] = 0
    return kvcache.DecodeWeights.from_model(model)


def run(engine, sids):
    """Step until the given streams end: {sid: (tokens, finish)}."""
    out = {sid: ([], None) for sid in sids}
    for _ in range(1000):
        if all(f is not None for _, f in out.values()):
            return out
        for sid, t, finish in engine.step():
            if sid in out:
                toks, _ = out[sid]
                out[sid] = (toks + ([] if t is None else [t]), finish)
    raise AssertionError("streams did not end")


@pytest.mark.parametrize("kern", KERNELS)
def test_alone_equals_generate(kern):
    w = tiny_weights()
    prompt = [3, 1, 4, 1, 5]
    ref = generate(w, prompt, max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=7, kernels=kern)[0]
    eng = Engine(w, slots=3, kernels=kern)
    sid = eng.add(prompt, temperature=1.0, top_k=20, top_p=0.9, seed=(7, 0), max_new_tokens=12)
    toks, finish = run(eng, [sid])[sid]
    assert toks == ref and finish == "length"
    assert len(eng.free) == 3  # the finished stream gave its slot back


@pytest.mark.parametrize("kern", KERNELS)
def test_stream_is_the_same_in_a_changing_batch(kern):
    """Streams join between steps and others end early or are cancelled: each stream's tokens are
    the tokens it draws alone (its own RNG; every row's sums do not depend on the other rows)."""
    w = tiny_weights()
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4], [11], [20, 21, 22, 23], [5, 5]]
    settings = [dict(temperature=1.0, seed=(i, 0), max_new_tokens=6 + 3 * i, top_k=None if i % 2 else 30)
                for i in range(len(prompts))]
    alone = []
    for p, s in zip(prompts, settings):
        eng = Engine(w, slots=1, kernels=kern)
        sid = eng.add(p, **s)
        alone.append(run(eng, [sid])[sid][0])

    eng = Engine(w, slots=3, kernels=kern)
    got = {i: [] for i in range(len(prompts))}
    waiting, live = list(range(len(prompts))), {}
    cancelled = None
    for step in range(200):
        while waiting and eng.free and (step % 2 == 0 or not live):  # join on every other step
            i = waiting.pop(0)
            live[eng.add(prompts[i], **settings[i])] = i
        if not live:
            break
        for sid, t, finish in eng.step():
            if t is not None:
                got[live[sid]].append(t)
            if finish:
                del live[sid]
        if step == 3 and cancelled is None:  # a client goes away mid-stream
            sid, cancelled = next(iter(live.items()))
            eng.cancel(sid)
            del live[sid]
    assert not waiting and not live
    for i in range(len(prompts)):
        if i == cancelled:
            assert got[i] == alone[i][:len(got[i])] and len(got[i]) < len(alone[i])
        else:
            assert got[i] == alone[i], f"stream {i}"


def test_stop_token_ends_the_stream_without_emitting_it():
    w = tiny_weights()
    eng = Engine(w, slots=2)
    sid = eng.add([1, 2, 3], temperature=0, max_new_tokens=20)
    greedy = run(eng, [sid])[sid][0]
    stop_at = 4 if len(set(greedy)) > 1 else 0
    sid = eng.add([1, 2, 3], temperature=0, max_new_tokens=20, stop=[greedy[stop_at]])
    toks, finish = run(eng, [sid])[sid]
    first = greedy.index(greedy[stop_at])
    assert toks == greedy[:first] and finish == "stop"


def test_full_cache_ends_with_length():
    w = tiny_weights(maxT=40)
    eng = Engine(w, slots=2, maxT=10)
    sid = eng.add(list(range(1, 8)), temperature=0.5, seed=1, max_new_tokens=100)
    toks, finish = run(eng, [sid])[sid]
    assert finish == "length" and len(toks) == 10 - 7 + 1  # 3 fed into the last positions, 1 more emitted
    sid = eng.add(list(range(1, 11)), temperature=0.5, seed=1, max_new_tokens=100)  # the prompt fills it
    toks, finish = run(eng, [sid])[sid]
    assert finish == "length" and len(toks) == 1


def test_reused_slot_forgets_its_old_stream():
    w = tiny_weights()
    fresh = Engine(w, slots=1)
    ref = run(fresh, [fresh.add([7, 8, 9], temperature=0.8, seed=3, max_new_tokens=8)])
    eng = Engine(w, slots=1)
    long = eng.add(list(range(1, 30)), temperature=0.8, seed=5, max_new_tokens=5)  # fills 33 positions
    run(eng, [long])
    sid = eng.add([7, 8, 9], temperature=0.8, seed=3, max_new_tokens=8)
    assert run(eng, [sid])[sid] == ref[0]


@pytest.mark.parametrize("kern", KERNELS)
def test_force_is_the_same_as_having_it_in_the_prompt(kern):
    w = tiny_weights()
    prompt, forced = [4, 5, 6], [30, 31, 32, 33]
    eng = Engine(w, slots=2, kernels=kern)
    other = eng.add([9, 9, 9, 9], temperature=1.0, seed=2, max_new_tokens=30)  # a neighbour decoding
    sid = eng.add(prompt, temperature=0, max_new_tokens=12)
    before = []
    for _ in range(3):
        before += [t for s, t, _ in eng.step() if s == sid]
    eng.force(sid, forced)
    assert eng.context_length(sid) == len(prompt) + 3 + len(forced)
    after = run(eng, [sid])[sid]

    ref = Engine(w, slots=1, kernels=kern)
    rid = ref.add(prompt + before + forced, temperature=0, max_new_tokens=9)
    assert after == run(ref, [rid])[rid]  # 9 more sampled tokens either way: 12 in all
    assert other in eng.streams  # the neighbour decoded on beside it


def test_force_logits_match_prefill():
    w = tiny_weights()
    eng = Engine(w, slots=2)
    sid = eng.add([1, 2], temperature=0, max_new_tokens=5)
    eng.force(sid, [3, 4, 5])
    ref = Engine(w, slots=1)
    rid = ref.add([1, 2, 3, 4, 5], temperature=0, max_new_tokens=5)
    np.testing.assert_allclose(eng.streams[sid].logits, ref.streams[rid].logits, rtol=1e-5, atol=1e-5)


def test_bad_input():
    w = tiny_weights(maxT=40)
    eng = Engine(w, slots=1, maxT=12)
    with pytest.raises(ValueError, match="1..12 tokens"):
        eng.add([])
    with pytest.raises(ValueError, match="1..12 tokens"):
        eng.add(list(range(13)))
    with pytest.raises(ValueError, match="vocab_size"):
        eng.add([1, 200])
    assert eng.free == [0]  # a failed prefill gives its slot back
    with pytest.raises(ValueError, match="temperature"):
        eng.add([1], temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        eng.add([1], top_p=0)
    with pytest.raises(ValueError, match="seed"):
        eng.add([1], seed=-3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        eng.add([1], max_new_tokens=0)
    sid = eng.add([1, 2, 3])
    with pytest.raises(RuntimeError, match="slots are busy"):
        eng.add([1])
    with pytest.raises(ValueError, match="cannot force"):
        eng.force(sid, list(range(10)))
    with pytest.raises(KeyError):
        eng.force(sid + 1, [1])
    eng.cancel(sid)
    eng.cancel(sid)  # twice is harmless
    assert eng.free == [0] and eng.step() == []
