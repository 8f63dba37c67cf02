"""A failed job's error names an uploaded file by its id, never by the server's folder that
holds the uploads (the caller knows its file id; the path is the operator's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.contract import DatasetSpec
from workers.train.data import DatasetError, load_splits

FILE_ID = "file-0123456789abcdef"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("text,label\na,0\nb,1,2\n", "line 3"),  # a row with a cell too many
        ("", "the file is empty"),
        ("text,other\na,0\n", "missing column 'label'"),
    ],
)
def test_an_upload_is_named_by_its_id_in_errors(tmp_path: Path, content: str, reason: str) -> None:
    files = tmp_path / "server-secret-folder" / "files"
    files.mkdir(parents=True)
    (files / FILE_ID).write_text(content)
    (files / "file-fedcba9876543210").write_text("text,label\nc,1\n")
    spec = DatasetSpec(
        train_file=FILE_ID,
        eval_file="file-fedcba9876543210",
        text_column="text",
        label_column="label",
        task_type="classification",
        file_format="csv",
    )
    with pytest.raises(DatasetError) as info:
        load_splits(spec, files_dir=files)
    message = str(info.value)
    assert message.startswith(f"{FILE_ID}: ") and reason in message
    assert "server-secret-folder" not in message and str(tmp_path) not in message


def test_a_path_the_caller_gave_is_named_as_given(tmp_path: Path) -> None:
    train = tmp_path / "mine.csv"
    train.write_text("text,label\na,0\nb,1,2\n")
    spec = DatasetSpec(
        train_file=str(train),
        eval_file=str(train),
        text_column="text",
        label_column="label",
        task_type="classification",
    )
    with pytest.raises(DatasetError, match=f"^{train}: line 3"):
        load_splits(spec)
