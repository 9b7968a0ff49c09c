import torch

from trainer.policy.instruction import EMBEDDING_DIM, InstructionEncoder


def test_embedding_does_not_depend_on_what_else_was_encoded():
    torch.set_num_threads(1)
    encoder = InstructionEncoder()
    short = "stack the red cube on the blue block"
    alone = encoder.encode([short])[0].clone()
    encoder._cache.clear()
    longer = "pick up the small white box on the left and place it into the black pot behind the obstacle"
    together = encoder.encode([longer, short])
    assert together.shape == (2, EMBEDDING_DIM)
    assert torch.equal(together[1], alone)
    assert torch.allclose(together.norm(dim=-1), torch.ones(2), atol=1e-6)


def test_paraphrases_are_close_and_other_tasks_are_not():
    encoder = InstructionEncoder()
    a, b, c = encoder.encode(
        [
            "pick up the white box and place it into the black pot",
            "grab the white box and put it in the black pot",
            "push the red cube to the green target",
        ]
    )
    assert float(a @ b) > 0.9
    assert float(a @ c) < 0.6
