"""Python API errors that say what was wrong and what to do (issue 12, item 5)."""

import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import recstack
from recstack import Columns
from recstack.core.errors import (ColumnNotFoundError, ConfigError, DataError, IdDtypeError, IdOutOfRangeError,
                                  UnsafeFileError)
from recstack.core.io import load_tensors
from recstack.features import FeatureSet, StringLookup
from recstack.layers import Embedding
from recstack.tasks import Retrieval
from recstack.training.loop import FitOptions


class TwoTower(recstack.Model):
    def __init__(self, embedding=Embedding):
        super().__init__()
        self.user = embedding(20, 4)
        self.item = embedding(15, 4)
        self.task = Retrieval()

    def compute_loss(self, batch, training=False):
        return self.task(self.user(batch["user"]), self.item(batch["item"]))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def fit(model, data, **kwargs):
    return model.fit(data, epochs=1, batch_size=4, optimizer=sgd, verbose=False, **kwargs)


def test_a_raw_data_frame_is_refused_with_how_to_encode_it():
    frame = pd.DataFrame({"user": [1, 2, 3], "item": [4, 5, 6]})
    for call in (lambda: fit(TwoTower(), frame), lambda: TwoTower().evaluate(frame)):
        with pytest.raises(DataError, match=r"pandas DataFrame.*recstack\.Columns\(feature_set\.transform\(df\)\)"
                                            r".*recstack\.Columns\(df\)"):
            call()


def test_an_encoded_data_frame_wrapped_in_columns_trains_and_strings_are_refused():
    frame = pd.DataFrame({"user": [1, 2, 3, 4], "item": [4, 5, 6, 7]})
    assert len(fit(TwoTower(), Columns(frame))) == 1
    with pytest.raises(DataError, match="holds strings.*StringLookup"):
        Columns(pd.DataFrame({"user": ["a", "b"]}))
    users = StringLookup().fit(["a", "b"])
    encoded = Columns(FeatureSet({"user": users}).transform(pd.DataFrame({"user": ["a", "b"]})))
    assert encoded["user"].tolist() == [1, 2]


def test_a_missing_column_names_it_and_the_available_ones():
    data = Columns({"user": torch.arange(4), "itme": torch.arange(4)})
    with pytest.raises(ColumnNotFoundError) as info:
        fit(TwoTower(), data)
    message = str(info.value)
    assert "no column 'item' (did you mean 'itme'?)" in message and "['itme', 'user']" in message
    assert isinstance(info.value, KeyError) and not message.startswith("'")   # no KeyError quoting


@pytest.mark.parametrize("embedding", [Embedding, nn.Embedding], ids=["recstack", "torch"])
def test_out_of_range_ids_name_the_column_the_id_and_the_vocabulary_size(embedding):
    data = Columns({"user": torch.tensor([0, 3, 42, 1]), "item": torch.arange(4)})
    with pytest.raises(IdOutOfRangeError) as info:
        fit(TwoTower(embedding), data)
    message = str(info.value)
    assert message.startswith("column 'user': embedding 'user' has 20 rows (vocabulary size 20) but got id 42")
    assert "vocabulary_size()" in message and isinstance(info.value, IndexError)
    with pytest.raises(IdOutOfRangeError, match="column 'user'.*id 42"):
        TwoTower(embedding).evaluate(data)


@pytest.mark.parametrize("embedding", [Embedding, nn.Embedding], ids=["recstack", "torch"])
def test_float_ids_say_ids_must_be_integers(embedding):
    data = Columns({"user": np.array([0.0, 1.0, 2.0, 3.0]), "item": torch.arange(4)})
    with pytest.raises(IdDtypeError, match=r"column 'user': embedding 'user'.*float32.*integer tensor.*StringLookup"):
        fit(TwoTower(embedding), data)


def test_embedding_outside_the_loop_still_explains_itself():
    with pytest.raises(IdOutOfRangeError, match="has 20 rows .* got id -1"):
        Embedding(20, 4)(torch.tensor([-1, 3]))
    with pytest.raises(IdDtypeError, match="integer tensor"):
        Embedding(20, 4)(torch.tensor([1.0]))


def test_feature_set_load_of_a_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "features.json"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="is not a FeatureSet file: it is binary.*FeatureSet.save"):
        FeatureSet.load(path)


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_refused_pickles_never_suggest_weights_only_false(tmp_path, capsys):
    pickled, junk = tmp_path / "evil.pt", tmp_path / "junk.pt"
    torch.save({"weight": _Payload()}, pickled)
    junk.write_bytes(b"not a torch file" * 8)
    for path in (pickled, junk):
        for load in (load_tensors, TwoTower().load_weights):
            with pytest.raises(UnsafeFileError) as info:
                load(path)
            assert "weights_only" not in str(info.value) and "safe_globals" not in str(info.value)
            assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(UnsafeFileError, match=r"refused, it contains a pickled Python object \(print\)"):
        load_tensors(pickled)
    assert "this ran" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "nowhere.pt")


def test_weights_round_trip_through_load_tensors(tmp_path):
    model = TwoTower()
    model.save_weights(tmp_path / "w.pt")
    other = TwoTower()
    other.load_weights(tmp_path / "w.pt")
    assert torch.equal(other.user.weight, model.user.weight)


def test_fit_options_are_defined_once_and_model_fit_keeps_its_signature():
    names = [p for p in inspect.signature(recstack.Model.fit).parameters][2:]
    assert names == [f for f in FitOptions.__dataclass_fields__]
    assert names[:14] == ["epochs", "batch_size", "optimizer", "validation_data", "validation_freq",
                          "validation_batch_size", "shuffle", "seed", "verbose", "callbacks", "initial_epoch",
                          "drop_remainder", "distributed_data", "autocast_dtype"]
    data = Columns({"user": torch.arange(8), "item": torch.arange(8)})
    torch.manual_seed(0)
    positional = TwoTower().fit(data, 2, 4, sgd, None, 1, None, False, 3, False)
    torch.manual_seed(0)
    keywords = TwoTower().fit(data, epochs=2, batch_size=4, optimizer=sgd, shuffle=False, seed=3, verbose=False)
    assert positional.history["loss"] == keywords.history["loss"] and len(positional) == 2


def test_a_misspelt_fit_option_suggests_the_right_one():
    data = Columns({"user": torch.arange(8), "item": torch.arange(8)})
    with pytest.raises(TypeError, match=r"TwoTower.fit\(\) got an unexpected keyword argument 'epoch' "
                                        r"\(did you mean 'epochs'\?\)"):
        TwoTower().fit(data, epoch=2, optimizer=sgd)
    with pytest.raises(TypeError, match="multiple values for 'epochs'"):
        TwoTower().fit(data, 2, epochs=3, optimizer=sgd)
    with pytest.raises(ConfigError, match="epochs, batch_size and validation_freq must be >= 1"):
        TwoTower().fit(data, epochs=0, optimizer=sgd)
