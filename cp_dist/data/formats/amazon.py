"""Amazon Review Data 2018 (McAuley lab), Toys and Games: 5-core reviews plus product metadata."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from cp_dist.data.columns import list_element_at
from cp_dist.data.formats.base import RawFormat, json_interactions, json_side_table
from cp_dist.data.lines import RawFile
from cp_dist.data.schema import Field, LabelRule

REVIEW_SCHEMA = pa.schema(
    [("reviewerID", pa.string()), ("asin", pa.string()), ("overall", pa.float64()), ("unixReviewTime", pa.int64())]
)
META_SCHEMA = pa.schema(
    [("asin", pa.string()), ("title", pa.string()), ("brand", pa.string()), ("category", pa.list_(pa.string()))]
)


class AmazonToys(RawFormat):
    name = "amazon-toys"
    label_rule = LabelRule(min_rating=1, max_rating=5, positive_at_least=4)
    file_names = {
        "reviews": ("Toys_and_Games_5.json", "Toys_and_Games_5.json.gz"),
        "meta": ("meta_Toys_and_Games.json", "meta_Toys_and_Games.json.gz"),
    }
    fields = (
        Field("user_id", "User ID", "user"),
        Field("item_id", "Item ID", "item"),
        Field("category", "Category", "item"),
        Field("title", "Title", "item"),
        Field("brand", "Brand", "item"),
    )

    interactions_role = "reviews"

    def read_side_tables(self, files: dict[str, RawFile]) -> tuple[None, pa.Table]:
        meta = json_side_table(files["meta"], META_SCHEMA, "asin")
        items = pa.table(
            {
                "key": meta["asin"],
                "item_id": meta["asin"],
                # The category path runs from "Toys & Games" down to the most specific node.
                "category": list_element_at(meta["category"], "last"),
                "title": meta["title"],
                "brand": meta["brand"],
            }
        )
        return None, items

    def read_interactions(self, raw: RawFile) -> Iterator[pa.Table]:
        return json_interactions(
            raw, REVIEW_SCHEMA, user="reviewerID", item="asin", rating="overall", timestamp="unixReviewTime"
        )
