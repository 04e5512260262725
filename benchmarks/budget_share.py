"""Share of proposals within budget after the first 50, on a space at a budget (issue: >= 80% for
the default space at 5e6). Runs the real search loop (sampler, constraint, rejection, slot claims)
in memory, with the proxy training replaced by a stand-in score that grows with the parameter
count, as accuracy does: the sampler's feasibility learning needs no real training, so this runs
on any CPU in about a minute.

    python benchmarks/budget_share.py [--space resnet_cifar] [--budget 5e6] [--proposals 150] [--seeds 5]
"""

import argparse
import math
import random
import statistics

import optuna

from nas.cli import parse_count
from nas.data import synthetic, validation_split
from nas.progress import budget_shares
from nas.search import SearchConfig, Worker
from nas.study import make_pruner, make_sampler
from nas.space import load_space


class StandIn(Worker):
    def train(self, trial, spec, recipe):
        params = trial.user_attrs["params"]
        return 0.6 + 0.3 * math.log(params) / math.log(self.cfg.budget) + random.Random(trial.number).gauss(0, 0.02)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="resnet_cifar")
    p.add_argument("--budget", type=parse_count, default=5_000_000)
    p.add_argument("--proposals", type=int, default=150)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--sampler", default="tpe")
    args = p.parse_args()
    space, data = load_space(args.space), validation_split(synthetic(100))
    shares = []
    for seed in range(args.seeds):
        cfg = SearchConfig(budget=args.budget, trials=10**6, space=args.space, sampler=args.sampler, seed=seed)
        study = optuna.create_study(direction="maximize", sampler=make_sampler(args.sampler, seed),
                                    pruner=make_pruner("none", 1))  # fmt: skip
        worker = StandIn(cfg, space, study, data, "cpu")
        for _ in range(args.proposals):
            trial = study.ask()
            state, value = worker._run_trial(trial)
            study.tell(trial, value, state=state)
        share, after_50 = budget_shares(study.trials)
        if after_50 is None:
            raise SystemExit(f"seed {seed}: fewer than 51 proposals; raise --proposals.")
        shares.append(after_50)
        print(f"seed {seed}: {share:.1%} of {args.proposals} proposals within budget, {after_50:.1%} after the first 50")
    print(f"{args.sampler} on {args.space} at {args.budget:,}: mean {statistics.mean(shares):.1%} within budget after the "
          f"first 50 (min {min(shares):.1%}, max {max(shares):.1%}, {args.seeds} seeds)")


if __name__ == "__main__":
    main()
