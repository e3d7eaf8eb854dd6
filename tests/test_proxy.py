"""The proxy engine: model building, LR schedules, the base cache, evaluation, snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mixagent.errors import ConfigError
from mixagent.proxy.config import CPTSpec, LRSpec, ModelSpec
from mixagent.proxy.schedule import lr_table

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "envs" / "micro.yaml"


@pytest.fixture(scope="module")
def resolved(cache):
    from mixagent.envs.setup import resolve_spec

    return resolve_spec(MICRO)


@pytest.fixture(scope="module")
def base(resolved):
    from mixagent.proxy.base_model import ensure_base

    return ensure_base(resolved.base_recipe(), resolved.spec.runtime, progress=False)


def make_engine(resolved, base, **cpt_changes):
    from mixagent.proxy.engine import ProxyEngine

    cpt = resolved.spec.cpt.model_copy(update=cpt_changes)
    return ProxyEngine(resolved.data, resolved.domains, base, cpt, resolved.spec.eval,
                       resolved.spec.runtime)


# -- schedules ---------------------------------------------------------------------------------------
def test_lr_schedules():
    cos = lr_table(LRSpec(schedule="cosine", peak=1.0, warmup_steps=4, min_ratio=0.1), 20)
    assert cos[:4].tolist() == [0.25, 0.5, 0.75, 1.0]  # re-warming
    assert cos[-1] == pytest.approx(0.1) and np.all(np.diff(cos[3:]) <= 1e-12)
    const = lr_table(LRSpec(schedule="constant", peak=0.5, warmup_steps=2), 10)
    assert const.tolist() == [0.25] + [0.5] * 9
    wsd = lr_table(LRSpec(schedule="wsd", peak=1.0, warmup_steps=2, min_ratio=0.0,
                          decay_fraction=0.3), 20)
    assert np.all(wsd[2:14] == 1.0) and wsd[-1] == pytest.approx(0.0)
    assert np.all(np.diff(wsd[14:]) < 0)


def test_cpt_budget_arithmetic():
    cpt = CPTSpec(num_steps=5, tokens_per_step=2048, batch_size=8, seq_len=32,
                  lr=LRSpec(peak=1e-3))
    assert cpt.steps_per_action == 8 and cpt.total_steps == 40


# -- model building ----------------------------------------------------------------------------------
def test_model_configs_build_and_report_bad_keys():
    from mixagent.proxy.model import build_hf_config, build_model, check_model_config

    gpt2 = build_hf_config(ModelSpec(arch="gpt2", config={"n_embd": 32, "n_layer": 1, "n_head": 2}),
                           400, 32, 0)
    check_model_config(gpt2)
    m = build_model(gpt2, seed=0)
    assert m.config.n_positions == 32 and m.config.resid_pdrop == 0.0
    # seeded initialisation, without touching the global RNG
    state = torch.get_rng_state()
    m2 = build_model(gpt2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters(), strict=True))

    with pytest.raises(ConfigError, match=r"model.config.n_embdd: not a GPT2Config key; did you "
                                          r"mean n_embd"):
        build_hf_config(ModelSpec(arch="gpt2", config={"n_embdd": 32}), 400, 32, 0)
    bad = build_hf_config(ModelSpec(arch="gpt2", config={"n_embd": 30, "n_head": 4}), 400, 32, 0)
    with pytest.raises(ConfigError, match=r"model.config: cannot build a gpt2 model: .*divisible"):
        check_model_config(bad)
    with pytest.raises(ConfigError, match=r"model.config.hidden_size: cannot build a llama model"):
        build_hf_config(ModelSpec(config={"hidden_size": "big"}), 400, 32, 0)


# -- base cache --------------------------------------------------------------------------------------
def test_base_is_cached_by_content_hash(resolved, base, cache):
    from transformers import AutoModelForCausalLM

    from mixagent.proxy.base_model import bases_dir, ensure_base

    assert base.path.parent == bases_dir() and base.path.is_relative_to(cache)
    files = {p.name for p in base.path.iterdir()}
    assert {"config.json", "model.safetensors", "optimizer.safetensors", "mixagent_base.json",
            "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    meta = json.loads((base.path / "mixagent_base.json").read_text())
    assert meta["data_content_hash"] == resolved.data.manifest.content_hash
    assert meta["domains"] == resolved.pretrain_domains
    mtime = (base.path / "model.safetensors").stat().st_mtime_ns
    again = ensure_base(resolved.base_recipe(), resolved.spec.runtime, progress=False)
    assert again.path == base.path
    assert (base.path / "model.safetensors").stat().st_mtime_ns == mtime  # not retrained
    model = AutoModelForCausalLM.from_pretrained(str(base.path))  # a standard HF directory
    assert model.config.vocab_size == resolved.data.manifest.tokenizer.vocab_size
    # anything that changes the base changes its key
    recipe = resolved.base_recipe()
    other = type(recipe)(recipe.data, recipe.domains, recipe.model,
                         recipe.pretrain.model_copy(update={"tokens": 9999}), recipe.seq_len,
                         recipe.seed)
    assert other.key != recipe.key
    assert type(recipe)(*[getattr(recipe, f) for f in ("data", "domains", "model", "pretrain",
                                                       "seq_len")], seed=1).key != recipe.key


# -- engine -------------------------------------------------------------------------------------------
def test_engine_snapshot_restore_is_exact_and_leaves_global_rng(resolved, base):
    eng = make_engine(resolved, base)
    eng.reset(3)
    w = np.linspace(1, 2, len(eng.domains))
    eng.train(w)
    snap = eng.snapshot()
    global_state = torch.get_rng_state()
    a = [eng.train(w[::-1]).loss for _ in range(2)]
    la = eng.evaluate().losses
    params_a = {k: v.clone() for k, v in eng.model.state_dict().items()}
    assert torch.equal(torch.get_rng_state(), global_state)
    eng.restore(snap)
    b = [eng.train(w[::-1]).loss for _ in range(2)]
    assert a == b
    assert np.array_equal(la, eng.evaluate().losses)
    for k, v in eng.model.state_dict().items():
        assert torch.equal(v, params_a[k])
    from mixagent.proxy.engine import BudgetExhaustedError

    with pytest.raises(BudgetExhaustedError, match="call reset"):
        eng.train(w)


def test_engine_restored_optimizer_state(resolved, base):
    eng = make_engine(resolved, base, optimizer_state="restored")
    eng.reset(0)
    assert len(eng.optimizer.state) == len([p for p in eng.model.parameters()])
    stats = eng.train(np.ones(len(eng.domains)))
    assert np.isfinite(stats.loss) and stats.tokens == resolved.spec.cpt.tokens_per_step
    assert stats.domain_sequences.sum() == stats.steps * resolved.spec.cpt.batch_size


def test_evaluation_is_fixed_and_batched(resolved, base):
    from mixagent.proxy.evaluation import Evaluator, held_out_chunks

    assert held_out_chunks(10, 3).tolist() == [0, 4, 9]
    assert held_out_chunks(2, 5).tolist() == [0, 1]
    model = base.load(torch.device("cpu"))[0]
    spec = resolved.spec.eval
    ev1 = Evaluator(resolved.data, resolved.domains, spec, resolved.spec.cpt.seq_len,
                    torch.device("cpu"))
    ev2 = Evaluator(resolved.data, resolved.domains, spec.model_copy(update={"batch_size": 3}),
                    resolved.spec.cpt.seq_len, torch.device("cpu"))
    r1, r2 = ev1(model), ev2(model)
    assert r1.losses.shape == (len(resolved.domains),)
    assert np.allclose(r1.losses, r2.losses, rtol=1e-5)  # batching does not change the result


def test_teacher_forced_exact_match_equals_greedy_decoding(resolved):
    """Memorise some task examples, then check the one-pass scorer against real decoding."""
    from mixagent.proxy.config import EvalSpec, OptimizerSpec, TaskSpec
    from mixagent.proxy.evaluation import Evaluator
    from mixagent.proxy.model import build_model
    from mixagent.proxy.runtime import thread_scope
    from mixagent.proxy.training import make_optimizer, train_steps

    torch.manual_seed(0)
    data = resolved.data
    spec = EvalSpec(sequences_per_domain=1, tasks=[TaskSpec(name="math_exact_match", examples=24)])
    ev = Evaluator(data, resolved.domains, spec, 32, torch.device("cpu"))
    task = ev.tasks[0]
    model = build_model(resolved.hf_config, seed=0)
    opt = make_optimizer(model, OptimizerSpec(weight_decay=0.0))
    train_rows = task.tokens[:16]  # memorise 16 of 24 examples: some right, some wrong
    batches = train_rows.unsqueeze(0).expand(150, -1, -1)
    with thread_scope(1):  # a tiny model: one thread is fastest and immune to busy cores
        train_steps(model, opt, batches, [3e-3] * 150, 1.0)
        model.eval()
        correct, nll = ev.per_example(model, task)
    assert correct.sum() >= 4 and (~correct).sum() >= 4

    tok = data.tokenizer
    eos = data.manifest.tokenizer.eos_token_id
    with torch.no_grad(), thread_scope(1):
        for i, (prompt, cont) in enumerate(zip(task.prompts, task.continuations, strict=True)):
            context = [eos, *tok(prompt, add_special_tokens=False)["input_ids"]]
            n = len(tok(cont, add_special_tokens=False)["input_ids"]) + 1
            cut = max(0, len(context) + n - 32)  # the scorer keeps the prompt's tail in seq_len
            ids = torch.tensor([context[cut:]])
            for _ in range(n):  # plain greedy decoding, one token at a time
                nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            text = tok.decode(ids[0, -n:].tolist())
            greedy_ok = text.startswith(cont) and not text[len(cont) : len(cont) + 1].isalnum()
            assert bool(correct[i]) == greedy_ok, (i, prompt, cont, text)
    assert torch.all(nll[:16] < nll[16:].mean())
