"""The Kendall tau a perfect score could reach against one-seed retrains (issue 18): the retrain
accuracies of the tiny studies taken as the truth, each redrawn with the seed noise that the nets
retrained with two seeds show (E|x1 - x2| = 2 sigma / sqrt(pi)), 2,000 draws. A candidate score's tau
(proxy_fidelity.py) is read against this ceiling, not against 1.

    python benchmarks/noise_ceiling.py [--state benchmarks/tiny_cifar] [--study tiny-arch-tpe ...]
"""

import argparse
import math
import random
import statistics

from nas.retrain import base_name, retrains
from nas.score import kendall_tau
from nas.study import load_study

BAND = 0.8  # as proxy_fidelity.py: nets within 80-100% of the budget


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state", default="benchmarks/tiny_cifar", help="folder of the studies' journal files")
    p.add_argument("--study", action="append", help="default: tiny-arch-tpe, tiny-arch-random, tiny-arch-band")
    a = p.parse_args()
    nets, gaps, budget = [], [], None
    for name in a.study or ["tiny-arch-tpe", "tiny-arch-random", "tiny-arch-band"]:
        study = load_study(f"journal:{a.state}/{name}.journal", name)
        budget = study.user_attrs["budget"]
        seeds: dict[str, list[float]] = {}
        for k, r in retrains(study).items():  # a scaled preset's seeds count for the noise, not as a net
            seeds.setdefault(base_name(k), []).append(r["retrain_test_acc"])
        for k, accs in seeds.items():
            gaps += [abs(x - y) for i, x in enumerate(accs) for y in accs[i + 1:]]
            if k.startswith("trial-"):
                nets.append((study.trials[int(k.split("-")[1])].user_attrs["params"], statistics.mean(accs)))
    if not gaps:
        raise SystemExit("no net is retrained with two seeds: the seed noise is unknown")
    sigma = statistics.mean(gaps) * math.sqrt(math.pi) / 2
    print(f"seed noise: sd {100 * sigma:.2f} points (from {len(gaps)} two-seed gap{'s' * (len(gaps) > 1)}: "
          f"{', '.join(f'{100 * g:.2f}' for g in gaps)})")
    rng = random.Random(0)
    for label, keep in (("all nets", lambda p: True), (f"{BAND:.0%}-100% of the budget", lambda p: p >= BAND * budget)):
        truth = [acc for params, acc in nets if keep(params)]
        taus = sorted(kendall_tau(truth, [x + rng.gauss(0, sigma) for x in truth]) for _ in range(2000))
        print(f"{label}: n {len(truth)}, a perfect score's tau {statistics.median(taus):.3f} "
              f"[{taus[100]:.3f}, {taus[1899]:.3f}] (median, 90% of draws)")


if __name__ == "__main__":
    main()
