"""The exercise checkers accept a correct answer and reject a wrong one with a clear message."""
import numpy as np
import pytest
import torch

from lopbook import exercises
from lopbook.exercises import ExerciseError


def erank_right(H):
    s = torch.linalg.svdvals(H.double())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def erank_wrong(H):                        # the entropy of the squared singular values instead
    s = torch.linalg.svdvals(H.double()) ** 2
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def online_right(learner, x, y):
    correct = 0
    for i in range(len(x)):
        _, out = learner.learn(x[i:i + 1], y[i:i + 1])
        correct += int(out.argmax(dim=1).item() == y[i].item())
    return correct / len(x)


def online_wrong(learner, x, y):           # scores the prediction made after the step
    correct = 0
    for i in range(len(x)):
        learner.learn(x[i:i + 1], y[i:i + 1])
        with torch.no_grad():
            correct += int(learner.net(x[i:i + 1]).argmax(dim=1).item() == y[i].item())
    return correct / len(x)


CASES = {
    "check_online_accuracy": (online_right, online_wrong, "after each step"),
    "check_effective_rank": (erank_right, erank_wrong, "effective rank"),
    "check_dead_units": (lambda h: int((h == 0).all(dim=0).sum()),
                         lambda h: int((h == 0).any(dim=0).sum()), "column is zero"),
    "check_contribution_utility": (
        lambda u, h, w, eta: eta * u + (1 - eta) * h.abs() * w.abs().sum(dim=0),
        lambda u, h, w, eta: eta * u + (1 - eta) * h.abs() * w.abs().sum(dim=1).mean(), "column of w_out"),
    "check_shrink_and_perturb_step": (
        lambda w, g, a, lam, n: w - a * (g + lam * w) + n,
        lambda w, g, a, lam, n: w - a * (g + lam * w), "forgot the noise"),
    "check_ltu_target": (
        lambda x, W, beta: (x @ W.T > beta * W.shape[1] - (W < 0).sum(1)).float(),
        lambda x, W, beta: (x @ W.T > beta * W.shape[1]).float(), "number of -1 weights"),
    "check_linear_baseline_accuracy": (
        lambda xtr, ytr, xte, yte: _logistic(xtr, ytr, xte, yte),
        lambda xtr, ytr, xte, yte: _logistic(xtr, ytr, xtr, ytr), "training images"),
    "check_weight_clipping": (
        lambda w, bound, kappa: w.clamp(-kappa * bound, kappa * bound),
        lambda w, bound, kappa: w.clamp(-kappa, kappa), "initial bound"),
}


def _logistic(xtr, ytr, xte, yte):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=1000).fit(xtr.numpy(), ytr.numpy()).score(xte.numpy(), yte.numpy())


def test_every_checker_is_tested():
    assert sorted(CASES) == sorted(n for n in exercises.__all__ if n.startswith("check_"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_checker_accepts_a_right_answer_and_rejects_a_wrong_one(name, capsys):
    right, wrong, message = CASES[name]
    check = getattr(exercises, name)
    check(right)
    assert capsys.readouterr().out.startswith("Correct")
    with pytest.raises(ExerciseError, match=message):
        check(wrong)


def test_a_baseline_that_scores_nothing_is_rejected():
    with pytest.raises(ExerciseError, match="above 0.9"):
        exercises.check_linear_baseline_accuracy(lambda xtr, ytr, xte, yte: 0.5)
