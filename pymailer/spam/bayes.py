"""
Combining token evidence into one spam probability: Gary Robinson's
per-token estimate and Fisher's chi-square combining, as SpamBayes does
("A Statistical Approach to the Spam Problem", Linux Journal 107, 2003).

Knows nothing of storage: L{spamProbability} takes the counts.
"""

import math

# Robinson's prior: a token seen n times moves from UNKNOWN towards its
# observed ratio with strength S (SpamBayes' unknown_word_prob/strength).
UNKNOWN = 0.5
STRENGTH = 0.45
# Tokens nearer 0.5 than this say nothing and are left out.
MIN_STRENGTH = 0.1
# At most this many of the most extreme tokens are combined.
MAX_CLUES = 150


def tokenProbability(spam, ham, totalSpam, totalHam):
    """
    Robinson's f(w): the probability that a message with this token is
    spam, given it was in C{spam} of C{totalSpam} trained spam and C{ham}
    of C{totalHam} trained ham, pulled towards L{UNKNOWN} while rare.
    """
    spamRatio = spam / totalSpam if totalSpam else 0.0
    hamRatio = ham / totalHam if totalHam else 0.0
    if spamRatio + hamRatio == 0:
        return UNKNOWN
    p = spamRatio / (spamRatio + hamRatio)
    n = spam + ham
    return (STRENGTH * UNKNOWN + n * p) / (STRENGTH + n)


def chi2Q(x2, v):
    """P(chi-square >= x2) with C{v} (even) degrees of freedom."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities):
    """
    Fisher-Robinson chi-square combining of token probabilities into one
    score in [0, 1]: near 1 spam, near 0 ham, near 0.5 unsure (as much
    evidence either way, or none).
    """
    clues = [p for p in probabilities if abs(p - 0.5) >= MIN_STRENGTH]
    clues.sort(key=lambda p: -abs(p - 0.5))
    clues = clues[:MAX_CLUES]
    if not clues:
        return 0.5
    n = len(clues)
    # Logs of the products, so hundreds of small factors never underflow.
    hamEvidence = sum(math.log(max(p, 1e-300)) for p in clues)
    spamEvidence = sum(math.log(max(1.0 - p, 1e-300)) for p in clues)
    s = 1.0 - chi2Q(-2.0 * spamEvidence, 2 * n)
    h = 1.0 - chi2Q(-2.0 * hamEvidence, 2 * n)
    return (s - h + 1.0) / 2.0


def spamProbability(counts, totalSpam, totalHam):
    """
    @param counts: C{{token: (spam, ham)}} for the message's tokens
        (unknown tokens may be absent).
    """
    return combine(tokenProbability(s, h, totalSpam, totalHam)
                   for s, h in counts.values())
