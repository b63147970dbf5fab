"""Matplotlib figures of the tour, written as PNG files (the Agg backend: no display needed)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def trace_and_rank(draws, path):
    """Trace (left) and rank (right) plots, one row per scalar: ``draws`` {label: (chains, draws) array}."""
    fig, axes = plt.subplots(len(draws), 2, figsize=(9, 1.9 * len(draws)), squeeze=False)
    for row, (label, values) in zip(axes, draws.items()):
        ranks = values.reshape(-1).argsort().argsort().reshape(values.shape)
        bins = np.linspace(0, ranks.size, 21)
        for chain in range(values.shape[0]):
            row[0].plot(values[chain], lw=0.5, alpha=0.8)
            row[1].hist(ranks[chain], bins=bins, histtype="step")
        row[0].set_ylabel(label)
        row[1].set_yticks([])
    axes[0, 0].set_title("trace (one colour per chain)")
    axes[0, 1].set_title("rank histograms (flat when chains agree)")
    return save(fig, path)


def posteriors(samples, path, titles=None):
    """Overlaid posterior histograms: ``samples`` {method: {label: 1-D array}}, one panel per label."""
    labels = list(next(iter(samples.values())))
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 2.8), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for method, values in samples.items():
            ax.hist(values[label], bins=50, density=True, histtype="step", label=method)
        ax.set_title(label if titles is None else titles[label])
    axes[0, 0].legend()
    return save(fig, path)


def curves(series, path, xlabel, ylabel, title, logy=False):
    """Line plots: ``series`` {label: (x, y)}."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    return save(fig, path)


def panels(series, path, xlabel, title):
    """Stacked line plots sharing x: ``series`` {ylabel: (x, y)}."""
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2.2 * len(series)), sharex=True, squeeze=False)
    for ax, (label, (x, y)) in zip(axes[:, 0], series.items()):
        ax.plot(x, y)
        ax.set_ylabel(label)
    axes[-1, 0].set_xlabel(xlabel)
    axes[0, 0].set_title(title)
    return save(fig, path)
