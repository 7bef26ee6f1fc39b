"""The Medical Entity Tree (MET) and the tagger that maps text onto it.

* ``normalize``: one normalization for vocabulary terms and for text;
* ``build``: the tree from open vocabularies (ICD-10-CM, HPO, OMIM, Orphanet);
* ``tree``: the loaded tree and its artifact in the object store;
* ``tagger``: Aho-Corasick matching with token boundaries and longest match;
* ``context``: ConText assertions (negated, uncertain, historical, family).
"""
