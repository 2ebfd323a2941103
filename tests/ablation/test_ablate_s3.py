"""An ablation study in cluster storage (``exp_dir="s3://..."``, against the moto server of
``tests/conftest.py``): the ablation table joins the study's record in the bucket."""

from __future__ import annotations

import csv
import io
import json

import pytest
from ablation_models import SignalData, SignalNet

import lightning_maggy as lm
from lightning_maggy.storage import open_url

pytestmark = pytest.mark.slow


def test_an_ablation_study_in_a_bucket_uploads_its_table(s3_bucket):
    url = f"s3://{s3_bucket}/ablation"
    result = lm.ablate(SignalNet, datamodule=SignalData, metric="val_acc", max_epochs=1, hparams={"lr": 0.05},
                       seeds=1, workers=2, exp_dir=url, verbose=False)
    assert result.exp_dir == url
    fs, root = open_url(url)
    table = list(csv.DictReader(io.StringIO(fs.cat_file(f"{root}/ablation.csv").decode())))
    assert [row["component"] for row in table] == [r.component for r in result.rows]
    saved = json.loads(fs.cat_file(f"{root}/result.json"))
    assert saved["ablation"]["rows"] == json.loads(json.dumps([r.to_dict() for r in result.rows]))
    assert len(fs.ls(f"{root}/trials")) == len(result.rows)
