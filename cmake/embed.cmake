# Writes a C source that holds files as byte arrays, so the CLI carries
# them without reading anything at run time (the attention page's
# page.css and page.js). Pure CMake, no xxd:
#   cmake -DOUT=out.c -DHEADER=page/page.h -DNAMES="a;b" -DFILES="a.css;b.js" -P embed.cmake
# gives, per name, `const unsigned char NAME[]` (the bytes and a NUL) and
# `const size_t NAME_len`, declared in HEADER.
list(LENGTH NAMES count)
math(EXPR last "${count} - 1")
set(text "/* Written by cmake/embed.cmake at build time: edit the files it embeds. */\n")
string(APPEND text "#include \"${HEADER}\"\n")
foreach(i RANGE ${last})
  list(GET NAMES ${i} name)
  list(GET FILES ${i} file)
  file(READ "${file}" hex HEX)
  string(LENGTH "${hex}" digits)
  math(EXPR bytes "${digits} / 2")
  # 16 bytes a line, each as 0xNN.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(REPEAT "0x..," 16 line)
  string(REGEX REPLACE "(${line})" "\\1\n    " hex "${hex}")
  get_filename_component(base "${file}" NAME)
  string(APPEND text "\n/* ${base} */\nconst unsigned char ${name}[] = {\n    ${hex}0};\n")
  string(APPEND text "const size_t ${name}_len = ${bytes};\n")
endforeach()
file(WRITE "${OUT}" "${text}")
