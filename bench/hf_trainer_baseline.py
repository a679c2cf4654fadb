"""The baseline: a plain transformers Trainer script written the tutorial way.

AutoModelForSequenceClassification + tokenizer map + DataCollatorWithPadding + Trainer with default
arguments, except the ones a recipe must set to compare like with like (epochs, batch size, learning
rate, seed). No length grouping, no bf16. Prints one JSON row on the last line.

    python bench/hf_trainer_baseline.py --model PATH --train train.csv --validation validation.csv --test test.csv \
        --rows 20000 --epochs 2 --batch-size 32 --learning-rate 1e-4
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile

import numpy as np
import pandas as pd
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", default=None, help="also report accuracy on this labelled file")
    parser.add_argument("--rows", type=int, default=None, help="seeded subset of the training rows")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    train = pd.read_csv(args.train)
    if args.rows and len(train) > args.rows:
        train = train.sample(n=args.rows, random_state=args.seed)
    validation = pd.read_csv(args.validation)
    labels = sorted(train["label"].astype(str).unique())
    index = {label: i for i, label in enumerate(labels)}

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True)

    def to_dataset(frame):
        data = Dataset.from_dict({"text": frame["text"].tolist(), "label": [index[str(x)] for x in frame["label"]]})
        return data.map(tokenize, batched=True)

    def compute_metrics(prediction):
        predicted = np.argmax(prediction.predictions, axis=-1)
        return {
            "accuracy": accuracy_score(prediction.label_ids, predicted),
            "macro_f1": f1_score(prediction.label_ids, predicted, average="macro"),
        }

    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=output,
                num_train_epochs=args.epochs,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                seed=args.seed,
                eval_strategy="epoch",
                save_strategy="no",
                report_to="none",
            ),
            train_dataset=to_dataset(train),
            eval_dataset=to_dataset(validation),
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
            compute_metrics=compute_metrics,
        )
        outcome = trainer.train()
        evaluation = trainer.evaluate()
        tested = trainer.evaluate(to_dataset(pd.read_csv(args.test)), metric_key_prefix="test") if args.test else {}
    row = {
        "accuracy": round(evaluation["eval_accuracy"], 4),
        "macro_f1": round(evaluation["eval_macro_f1"], 4),
        **{f"test_{k}": round(tested[f"test_{k}"], 4) for k in ("accuracy", "macro_f1") if tested},
        "samples_per_s": round(outcome.metrics["train_samples_per_second"], 2),
        "train_runtime_s": round(outcome.metrics["train_runtime"], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "trainable_pct": 100.0,
        "train_rows": len(train),
        "epochs": args.epochs,
        "precision": "fp32",
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
