"""The prompts of the user's own datasets: CompassVerifier's grading prompt and its system
prompt for a judged question, and the multiple-choice prompt."""

from __future__ import annotations

from collections.abc import Sequence

JUDGE_SYSTEM_PROMPT = "You are a helpful assistant who evaluates the correctness and quality of models' outputs."

# OpenCompass's CompassVerifier-style grading prompt, word for word as in
# opencompass/configs/datasets/aime2025/aime2025_llmjudge_gen_5e9f4f.py (0.5.4). The judge's
# first A or B is the verdict (generic_llmjudge_postprocess).
GRADER_TEMPLATE = """
    Please as a grading expert, judge whether the final answers given by the candidates below are consistent with the standard answers, that is, whether the candidates answered correctly. 
    
    Here are some evaluation criteria:
    1. Please refer to the given standard answer. You don't need to re-generate the answer to the question because the standard answer has been given. You only need to judge whether the candidate's answer is consistent with the standard answer according to the form of the question. Don't try to answer the original question. You can assume that the standard answer is definitely correct.
    2. Because the candidate's answer may be different from the standard answer in the form of expression, before making a judgment, please understand the question and the standard answer first, and then judge whether the candidate's answer is correct, but be careful not to try to answer the original question.
    3. Some answers may contain multiple items, such as multiple-choice questions, multiple-select questions, fill-in-the-blank questions, etc. As long as the answer is the same as the standard answer, it is enough. For multiple-select questions and multiple-blank fill-in-the-blank questions, the candidate needs to answer all the corresponding options or blanks correctly to be considered correct.
    4. Some answers may be expressed in different ways, such as some answers may be a mathematical expression, some answers may be a textual description, as long as the meaning expressed is the same. And some formulas are expressed in different ways, but they are equivalent and correct.
    5. If the prediction is given with \\boxed{}, please ignore the \\boxed{} and only judge whether the candidate's answer is consistent with the standard answer.

    Please judge whether the following answers are consistent with the standard answer based on the above criteria. Grade the predicted answer of this new question as one of:
    A: CORRECT 
    B: INCORRECT
    Just return the letters "A" or "B", with no text around it.

    Here is your task. Simply reply with either CORRECT, INCORRECT. Don't apologize or correct yourself if there was a mistake; we are just trying to grade the answer.


    <Original Question Begin>: \n{question}\n<Original Question End>\n\n
    <Gold Target Begin>: \n{answer}\n<Gold Target End>\n\n
    <Predicted Answer Begin>: \n{prediction}\n<Predicted End>\n\n
    
    Judging the correctness of candidates' answers:
""".strip()  # noqa: W291, W293, E501 - OpenCompass's wording, trailing spaces included


def mc_prompt(options: Sequence[str]) -> str:
    """The question and its options, asking for the letter on a last line `ANSWER: X` (the wording
    of OpenCompass's GPQA prompt)."""
    letters = "".join(options)
    head = ("Answer the following multiple choice question. The last line of your response should be of "
            f"the following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}.")
    lines = [head, "", "{question}", ""] + [f"{letter}) {{{letter}}}" for letter in options]
    return "\n".join(lines)
