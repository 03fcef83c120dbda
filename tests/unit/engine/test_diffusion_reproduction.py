"""The Diffusion-DPO reproduction on the embedded digits model: after training on on-policy pairs whose
winner has more ink, the samples for the same captions and seeds carry more ink than the base's, and are
still read as the captioned digit more often than not (``bench/diffusion_dpo_reproduction.py`` prints
the numbers)."""

import torch

from training.engine.diffusion.digits import ensure_digits_model
from training.engine.diffusion.models import load_diffusion
from training.engine.diffusion.reproduction import INK_RUN, ink_report, write_ink_pairs
from training.engine.methods import config_from_dict, train


def test_more_ink_wins_so_the_trained_model_draws_more_ink_and_still_the_right_digits(tmp_path):
    torch.set_num_threads(2)
    folder = ensure_digits_model()  # trained once per model cache, then reused
    base = load_diffusion(folder)
    data = write_ink_pairs(base, tmp_path / "pairs.zip")
    before = ink_report(base)
    config = config_from_dict(
        {
            "method": "diffusion_dpo",
            "model": f"local:{folder}",
            "train_file": str(data),
            "output_dir": str(tmp_path / "out"),
            "encode_cache_dir": str(tmp_path / "cache"),
            **INK_RUN,
        }
    )
    result = train(config)
    after = ink_report(load_diffusion(result.final_model))
    assert after["ink"] > before["ink"] + 0.005, (before, after)
    assert after["accuracy"] > 0.5, (before, after)
    assert result.eval_metrics["eval/implicit_acc"] > 0.5
