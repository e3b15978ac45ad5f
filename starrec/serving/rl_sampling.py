"""RL-data sampling through a served student: the STAR inference loop as a ``ChainSampler``.

``starrec distill rl-data`` samples the SFT student in-process with transformers, which re-reads
the whole prompt after every tool call. Served by vLLM, the eight samples of an instance share one
cached prompt prefix and are batched continuously, which on this project's 2-core machine is the
difference between hours and minutes per hundred instances. The chains are those
:func:`~starrec.serving.loop.run_chain` writes at evaluation time (same budget forcing, same tool
responses), so the RL buckets measure the student as it will be served.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from starrec.distill.rldata import ChainSampler, RLDataConfig, SampledChain, SampledInstance
from starrec.distill.rollout import ToolExecutor
from starrec.serving.backends import GenerationBackend
from starrec.serving.loop import StarLoopConfig, run_chain
from starrec.tools.base import EvidenceSource


def rl_loop_config(config: RLDataConfig) -> StarLoopConfig:
    """The loop knobs that match the RL-data config (budget, reserve, tool limit, neighbours)."""
    return StarLoopConfig(
        max_tool_calls=config.max_tool_calls,
        max_completion_tokens=config.max_completion_length,
        # One request never asks for more than eval's segment cap: prompt + max_tokens must fit the
        # server's context, and the chain's own budget still bounds the whole.
        max_tokens_per_call=min(config.max_completion_length, StarLoopConfig().max_tokens_per_call),
        recommend_top=config.recommend_top,
        recommend_reserve=config.recommend_reserve,
        evidence_k=config.tool_k,
    )


def served_sampler(
    backend: GenerationBackend, evidence: EvidenceSource | None, config: RLDataConfig
) -> ChainSampler:
    """Sample an instance's chains on ``backend``, all at once.

    Sample ``j`` of ``samples`` uses the request seed ``seed * samples + j``: distinct for every
    (instance, sample), as instance seeds are consecutive.
    """
    loop_config = rl_loop_config(config)
    executor = ToolExecutor(evidence if config.ablation != "no_tools" else None, config.tool_k)

    def sample(instance: SampledInstance, samples: int, seed: int) -> list[SampledChain]:
        def one(offset: int) -> SampledChain:
            try:
                chain = run_chain(
                    instance.prompt, instance.candidates, backend, executor, loop_config,
                    temperature=config.temperature, seed=seed * samples + offset,
                )  # fmt: skip
            except Exception as error:  # one failed request costs one sample, counted, not the stage
                return SampledChain(text="", generated=0, error=f"{type(error).__name__}: {error}")
            return SampledChain(
                text=chain.completion,
                generated=chain.completion_tokens,
                forced=chain.forced,
                tool_calls=len(chain.tool_calls),
                tool_errors=sum(call.error is not None for call in chain.tool_calls) + chain.tool_limit_hits,
            )

        with ThreadPoolExecutor(max_workers=samples) as pool:
            return list(pool.map(one, range(samples)))  # one() never raises: a failure is its error

    return sample
