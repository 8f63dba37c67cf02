"""Parameter names and shapes of BERT-base for sequence classification (2 labels), in order."""

from __future__ import annotations


def bert_base_shapes() -> list[tuple[str, tuple[int, ...]]]:
    h, inter = 768, 3072
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("bert.embeddings.word_embeddings.weight", (30522, h)),
        ("bert.embeddings.position_embeddings.weight", (512, h)),
        ("bert.embeddings.token_type_embeddings.weight", (2, h)),
        ("bert.embeddings.LayerNorm.weight", (h,)),
        ("bert.embeddings.LayerNorm.bias", (h,)),
    ]
    for i in range(12):
        p = f"bert.encoder.layer.{i}."
        for m in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            shapes += [(p + m + ".weight", (h, h)), (p + m + ".bias", (h,))]
        shapes += [
            (p + "attention.output.LayerNorm.weight", (h,)),
            (p + "attention.output.LayerNorm.bias", (h,)),
        ]
        shapes += [(p + "intermediate.dense.weight", (inter, h)), (p + "intermediate.dense.bias", (inter,))]
        shapes += [(p + "output.dense.weight", (h, inter)), (p + "output.dense.bias", (h,))]
        shapes += [(p + "output.LayerNorm.weight", (h,)), (p + "output.LayerNorm.bias", (h,))]
    shapes += [("bert.pooler.dense.weight", (h, h)), ("bert.pooler.dense.bias", (h,))]
    shapes += [("classifier.weight", (2, h)), ("classifier.bias", (2,))]
    return shapes
