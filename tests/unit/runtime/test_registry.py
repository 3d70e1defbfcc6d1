import pytest

from sparse_cbm.errors import DatasetError
from sparse_cbm.runtime.registry import Registry


def test_names_keep_registration_order_and_lookup_returns_the_item():
    reg = Registry("dataset.name", DatasetError)
    reg.add("shapes", 1)
    reg.register("cub")(2)
    assert reg.names() == ("shapes", "cub") and list(reg) == ["shapes", "cub"] and len(reg) == 2
    assert reg.get("cub") == 2 and "cub" in reg and "cifar" not in reg


def test_an_unknown_name_raises_the_kinds_error_with_the_choices_and_the_closest():
    reg = Registry("dataset.name", DatasetError)
    reg.add("shapes", 1)
    reg.add("cub", 2)
    with pytest.raises(DatasetError, match=r"unknown dataset.name 'shape' \(did you mean 'shapes'\?\); "
                                           r"use one of: shapes, cub\."):
        reg.get("shape")


def test_a_name_registered_twice_is_refused():
    reg = Registry("loss")
    reg.add("l1", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("l1", 2)
